"""The storage node's disk layout: the 36-entry rule, logarithmic depth, slot reuse, rebuild from disk.

Files are written the way the node writes them, through ``DurableWrite``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import BadRequest

from dfsd.storage.disk import Disk, DurableWrite
from dfsd.storage.layout import FANOUT, Layout, path_slot, slot_path
from dfsd.wire import ConnectionLost


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """These promises are about directories, not durability (that is test_disk.py's): they run in memory (tmpfs) where
    the machine has one, so the fsyncs of the real write path cost nothing and 20,000 files take seconds."""
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=memory, prefix="dfsd-layout-") as directory:
        yield Path(directory)


@pytest.fixture
def disk() -> Iterator[Disk]:
    disk = Disk()
    yield disk
    disk.close()


async def store(disk: Disk, layout: Layout, file_id: int, payload: bytes = b"x") -> Path:
    async with DurableWrite(disk, layout, file_id) as file:
        await file.write_whole(payload)
    path = layout.path(file_id)
    assert path is not None
    return path


def entries_per_directory(root: Path) -> dict[Path, int]:
    return {Path(d): len(names) + len(dirs) for d, dirs, names in os.walk(root)}


@pytest.mark.parametrize("slot", [0, 35, 36, 1331, 1332, 48_000, 1_733_000, 10**9])
def test_slot_paths_round_trip(slot: int) -> None:
    assert path_slot(slot_path(slot)) == slot


def test_paths_never_move_as_the_node_grows() -> None:
    assert slot_path(5) == ("g0", "5")
    assert slot_path(40) == ("g1", "0", "4")
    assert slot_path(2000) == ("g2", "0", "i", "k")


async def test_twenty_thousand_files_keep_36_entries_per_directory(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    count = 20_000
    await asyncio.gather(
        *(store(disk, layout, file_id) for file_id in range(1, count + 1))
    )  # the disk's threads queue them
    counts = entries_per_directory(tmp_path)
    assert max(counts.values()) <= FANOUT
    depth = max(len(path.relative_to(tmp_path).parts) for path in tmp_path.rglob("*"))
    assert depth <= math.ceil(math.log(count, FANOUT)) + 2  # generation dir + digits + file
    assert sum(1 for path in tmp_path.rglob("*") if path.is_file()) == count


async def test_partial_files_count_against_the_limit_too(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    async with contextlib.AsyncExitStack() as writing:
        for file_id in range(1, 1000):
            file = await writing.enter_async_context(DurableWrite(disk, layout, file_id))
            await file.create()
        assert len(list(tmp_path.rglob("*.part"))) == 999
        assert max(entries_per_directory(tmp_path).values()) <= FANOUT
    assert not list(tmp_path.rglob("*.part"))  # never published: all removed


async def test_deleted_slots_are_reused(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    paths = {file_id: await store(disk, layout, file_id) for file_id in range(1, 101)}
    assert layout.remove(7) and layout.remove(50)
    assert not paths[7].exists()
    assert (await store(disk, layout, 1000)).parent == paths[7].parent
    assert (await store(disk, layout, 1001)).parent == paths[50].parent
    assert len(list(tmp_path.rglob("*.*"))) == 100


async def test_abandoned_writes_free_their_slot(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    with pytest.raises(ConnectionLost):
        async with DurableWrite(disk, layout, 1) as file:
            await file.create()
            await file.write(b"half")
            raise ConnectionLost("the sender went away")
    assert not list(tmp_path.rglob("*.part"))
    assert (await store(disk, layout, 2)).name == "0.2"


def test_rebuild_holds_a_small_file_a_crash_cut_short_at_its_final_path(tmp_path: Path) -> None:
    """A small file is written at its final path from the start (``DurableWrite.write_whole``). One that a crash cut
    short is held after a rebuild like any other, so the node reports it; the manager, whose records cannot name it
    (nothing is recorded before the node answers ``stored``), has it removed as an orphan."""
    (tmp_path / "g0").mkdir()
    crashed = tmp_path / "g0" / "0.500"  # created, never written
    crashed.touch()
    layout = Layout(tmp_path)
    assert [(file.file_id, file.size) for file in layout.load()] == [(500, 0)]
    assert layout.remove(500)
    assert not crashed.exists()


async def test_rebuild_from_disk_drops_partial_files(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    for file_id in range(1, 80):
        await store(disk, layout, file_id, str(file_id).encode())
    layout.remove(3)
    crashed = tmp_path / "g0" / "2.500.part"  # a write to the slot file 3 freed, cut short by a crash
    crashed.write_bytes(b"half written")

    reborn = Layout(tmp_path)
    held = reborn.load()
    assert sorted(f.file_id for f in held) == [i for i in range(1, 80) if i != 3]
    assert not crashed.exists()
    path = reborn.path(42)
    assert path is not None and path.read_bytes() == b"42"
    assert reborn.path(3) is None
    assert (await store(disk, reborn, 600)).name == "2.600"
    assert reborn.file_ids() == sorted([*(i for i in range(1, 80) if i != 3), 600])


async def test_a_file_id_cannot_be_written_twice(tmp_path: Path, disk: Disk) -> None:
    layout = Layout(tmp_path)
    layout.load()
    await store(disk, layout, 1)
    with pytest.raises(BadRequest, match="already holds file id 1"):
        await store(disk, layout, 1)
    assert (await store(disk, layout, 2)).name == "1.2"  # the refusal took no slot


async def test_foreign_entries_are_reported_kept_and_counted_against_36_repro(tmp_path: Path, disk: Disk) -> None:
    """Entries dfsd did not make are never indexed or deleted, and each still takes one of its directory's 36
    entries: with strays at the top, in g0, in a full g1 leaf and clashing with a sub-directory's name, filling the
    node up keeps every directory at 36 entries at most."""
    layout = Layout(tmp_path)
    layout.load()
    for file_id in range(1, 40):  # g0 full, g1/0 begun
        await store(disk, layout, file_id)
    strays = [
        tmp_path / "README.txt",
        tmp_path / "g0" / "copied-in.bin",
        tmp_path / "g1" / "0" / "notes",
        tmp_path / "g1" / "5",  # a file where directory g1/5 would go
        tmp_path / "g0" / "7.99.bak",
    ]
    for stray in strays:
        stray.write_bytes(b"not dfsd's")
    (tmp_path / "g1" / "junk").mkdir()
    (tmp_path / "g1" / "junk" / "3.12").write_bytes(b"inside a foreign directory: not looked at")

    again = Layout(tmp_path)
    held = again.load()
    assert sorted(f.file_id for f in held) == list(range(1, 40))
    assert sorted(again.foreign) == sorted([path.relative_to(tmp_path) for path in strays] + [Path("g1", "junk")])
    assert again.overfull == [Path("g0")]  # 36 files of ours and two strays
    for file_id in range(1000, 3000):
        await store(disk, again, file_id)
    for file_id in range(1, 30):  # freed slots of the over-full g0 are given up until it holds 36 entries
        again.remove(file_id)
    for file_id in range(3000, 3100):
        await store(disk, again, file_id)
    assert max(entries_per_directory(tmp_path / "g1").values()) <= FANOUT
    assert len(os.listdir(tmp_path / "g0")) == FANOUT
    assert all(stray.read_bytes() == b"not dfsd's" for stray in strays)
    assert not (tmp_path / "g1" / "5").is_dir()
    rebuilt = Layout(tmp_path)
    assert {f.file_id for f in rebuilt.load()} == set(range(30, 40)) | set(range(1000, 3100))
    assert len(rebuilt.foreign) == len(strays) + 1

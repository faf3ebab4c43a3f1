"""A node's durable write on its own: what it keeps, and that every way out of it but one leaves nothing behind.

Each test writes real files in a temporary data directory; the full disk is a real, tiny tmpfs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import BadRequest, ChecksumMismatch, InternalError, StorageFull
from harness import small_tmpfs

from dfsd.bulk import BATCH_BYTES
from dfsd.storage import directories
from dfsd.storage.disk import DIRECT_MIN, Disk, DurableWrite
from dfsd.storage.layout import Layout
from dfsd.wire import ConnectionLost

PAYLOAD = b"durable bytes " * 1000
SHA256 = hashlib.sha256(PAYLOAD).digest()


@pytest.fixture
def disk() -> Iterator[Disk]:
    disk = Disk()
    yield disk
    disk.close()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "data")
    layout.load()
    return layout


def entries(layout: Layout) -> list[str]:
    """Every file under the data directory, by path."""
    return sorted(str(path.relative_to(layout.root)) for path in layout.root.rglob("*") if path.is_file())


def assert_nothing_kept(layout: Layout) -> None:
    assert entries(layout) == []
    assert layout.file_ids() == []


async def assert_slot_free(disk: Disk, layout: Layout) -> None:
    """The first slot is free again: the next file takes it."""
    async with DurableWrite(disk, layout, 99) as file:
        await file.write_whole(b"next")
    assert entries(layout) == ["g0/0.99"]


async def test_a_stream_is_published_in_its_slot(disk: Disk, layout: Layout) -> None:
    async with DurableWrite(disk, layout, 7, len(PAYLOAD), SHA256) as file:
        await file.create()
        assert entries(layout) == ["g0/0.7.part"]
        for start in range(0, len(PAYLOAD), 4096):
            await file.write(PAYLOAD[start : start + 4096])
        assert await file.publish(SHA256) == (len(PAYLOAD), SHA256)
    assert entries(layout) == ["g0/0.7"]
    path = layout.path(7)
    assert path is not None and path.read_bytes() == PAYLOAD


async def test_a_whole_file_is_published_in_one_go(disk: Disk, layout: Layout) -> None:
    async with DurableWrite(disk, layout, 7, len(PAYLOAD), SHA256) as file:
        assert await file.write_whole(PAYLOAD) == (len(PAYLOAD), SHA256)
    path = layout.path(7)
    assert path is not None and path.read_bytes() == PAYLOAD


async def test_a_stream_of_unknown_size_and_digest_is_kept_as_it_came(disk: Disk, layout: Layout) -> None:
    async with DurableWrite(disk, layout, 7) as file:
        await file.create()
        await file.write(PAYLOAD)
        assert await file.publish() == (len(PAYLOAD), SHA256)
    assert layout.file_ids() == [7]


async def test_an_exception_in_the_block_removes_the_partial_file(disk: Disk, layout: Layout) -> None:
    with pytest.raises(ConnectionLost):
        async with DurableWrite(disk, layout, 7) as file:
            await file.create()
            await file.write(PAYLOAD[:100])
            raise ConnectionLost("the sender went away")
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_cancelled_write_removes_the_partial_file(disk: Disk, layout: Layout) -> None:
    created = asyncio.Event()

    async def write_and_wait() -> None:
        async with DurableWrite(disk, layout, 7) as file:
            await file.create()
            await file.write(PAYLOAD[:100])
            created.set()
            await asyncio.Event().wait()  # the rest never comes

    task = asyncio.create_task(write_and_wait())
    await created.wait()
    assert entries(layout) == ["g0/0.7.part"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_stream_of_several_batches_is_kept_whole(disk: Disk, layout: Layout) -> None:
    payload = os.urandom(2 * BATCH_BYTES + 999)
    digest = hashlib.sha256(payload).digest()
    async with DurableWrite(disk, layout, 7, len(payload), digest) as file:
        await file.create()
        for start in range(0, len(payload), 1024 * 1024):
            await file.write(payload[start : start + 1024 * 1024])
        assert await file.publish(digest) == (len(payload), digest)
    path = layout.path(7)
    assert path is not None and path.read_bytes() == payload


async def write_in_pieces(file: DurableWrite, payload: bytes, piece: int) -> None:
    for start in range(0, len(payload), piece):
        await file.write(payload[start : start + piece])


async def test_a_large_stream_written_around_the_page_cache_is_kept_whole(disk: Disk, layout: Layout) -> None:
    """A stream announced at DIRECT_MIN bytes or more goes with O_DIRECT: pieces off any block boundary and a last,
    partial block still give exactly the bytes sent."""
    payload = os.urandom(DIRECT_MIN + 4097)
    digest = hashlib.sha256(payload).digest()
    async with DurableWrite(disk, layout, 7, len(payload), digest) as file:
        await file.create()
        await write_in_pieces(file, payload, 1024 * 1024 + 3)
        assert await file.publish(digest) == (len(payload), digest)
    path = layout.path(7)
    assert path is not None and path.read_bytes() == payload


@pytest.mark.parametrize("how", ["cut off", "checksum mismatch"])
async def test_a_large_stream_that_fails_keeps_nothing(disk: Disk, layout: Layout, how: str) -> None:
    """The way out of a direct write waits for its own thread and drops what it staged: nothing is left."""
    payload = os.urandom(DIRECT_MIN)
    wrong = hashlib.sha256(b"other bytes").digest()
    with pytest.raises(ConnectionLost if how == "cut off" else ChecksumMismatch):
        async with DurableWrite(disk, layout, 7, len(payload)) as file:
            await file.create()
            if how == "cut off":
                await write_in_pieces(file, payload[: len(payload) // 2 + 5], 1024 * 1024)
                raise ConnectionLost("the sender went away")
            await write_in_pieces(file, payload, 1024 * 1024)
            await file.publish(wrong)
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


@pytest.mark.parametrize(("announced", "batches"), [(None, 1), (DIRECT_MIN, 3)], ids=["cached", "direct"])
async def test_a_write_cancelled_while_its_threads_write_keeps_nothing(
    disk: Disk, layout: Layout, announced: int | None, batches: int
) -> None:
    """Cancelled with batches in a disk thread (and, for a large stream, a stage in the direct file's own thread):
    the way out waits for them before closing the file, and removes it."""
    written = asyncio.Event()

    async def write_and_wait() -> None:
        async with DurableWrite(disk, layout, 7, announced) as file:
            await file.create()
            for _ in range(batches):
                await file.write(b"x" * BATCH_BYTES)  # handed to a disk thread
            written.set()
            await asyncio.Event().wait()  # the rest never comes

    task = asyncio.create_task(write_and_wait())
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_block_left_without_publishing_keeps_nothing(disk: Disk, layout: Layout) -> None:
    async with DurableWrite(disk, layout, 7) as file:
        await file.create()
        await file.write(PAYLOAD)
    assert_nothing_kept(layout)


@pytest.mark.parametrize("where", ["announced", "at the end"])
async def test_a_digest_mismatch_keeps_nothing(disk: Disk, layout: Layout, where: str) -> None:
    wrong = hashlib.sha256(b"other bytes").digest()
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        async with DurableWrite(disk, layout, 7, sha256=wrong if where == "announced" else None) as file:
            await file.create()
            await file.write(PAYLOAD)
            await file.publish(wrong if where == "at the end" else None)
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_whole_file_with_the_wrong_digest_keeps_nothing(disk: Disk, layout: Layout) -> None:
    with pytest.raises(ChecksumMismatch):
        async with DurableWrite(disk, layout, 7, sha256=hashlib.sha256(b"other bytes").digest()) as file:
            await file.write_whole(PAYLOAD)
    assert_nothing_kept(layout)


async def test_more_bytes_than_announced_are_refused_before_they_reach_the_disk(disk: Disk, layout: Layout) -> None:
    with pytest.raises(BadRequest, match="more bytes arrived than the 10 announced"):
        async with DurableWrite(disk, layout, 7, size=10) as file:
            await file.create()
            await file.write(b"x" * 8)
            await file.write(b"x" * 8)
    assert_nothing_kept(layout)


async def test_fewer_bytes_than_announced_keep_nothing(disk: Disk, layout: Layout) -> None:
    with pytest.raises(BadRequest, match="8 bytes arrived, 10 were announced"):
        async with DurableWrite(disk, layout, 7, size=10) as file:
            await file.create()
            await file.write(b"x" * 8)
            await file.publish()
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_an_exception_after_publishing_removes_the_file(disk: Disk, layout: Layout) -> None:
    """The sender went away before it heard "stored": it keeps no record of the file, so the node keeps none."""
    with pytest.raises(ConnectionLost):
        async with DurableWrite(disk, layout, 7) as file:
            await file.write_whole(PAYLOAD)
            assert entries(layout) == ["g0/0.7"]
            raise ConnectionLost("the sender went away")
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_file_removed_while_being_written_is_not_kept(disk: Disk, layout: Layout) -> None:
    with pytest.raises(InternalError, match="abandoned before it was committed"):
        async with DurableWrite(disk, layout, 7) as file:
            await file.create()
            await file.write(PAYLOAD)
            assert layout.remove(7)  # a delete arrives while the bytes are still coming
            await file.publish()
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)


async def test_a_file_id_held_already_is_a_bad_request(disk: Disk, layout: Layout) -> None:
    async with DurableWrite(disk, layout, 7) as file:
        await file.write_whole(PAYLOAD)
    with pytest.raises(BadRequest, match="already holds file id 7"):
        async with DurableWrite(disk, layout, 7):
            pass
    assert entries(layout) == ["g0/0.7"]


async def test_directories_are_made_for_a_new_generation(disk: Disk, layout: Layout) -> None:
    for file_id in range(1, 38):  # slots 0-36: the 37th opens generation 1
        async with DurableWrite(disk, layout, file_id) as file:
            await file.write_whole(b"x")
    assert layout.path(37) == layout.root / "g1" / "0" / "0.37"


async def test_a_data_directory_removed_behind_the_node_is_not_made_again(disk: Disk, layout: Layout) -> None:
    shutil.rmtree(layout.root)
    with pytest.raises(InternalError, match="could not write"):
        async with DurableWrite(disk, layout, 7) as file:
            await file.write_whole(PAYLOAD)
    assert not layout.root.exists()
    assert layout.file_ids() == []


async def test_a_directory_removed_behind_the_node_after_a_write_is_made_again(disk: Disk, layout: Layout) -> None:
    """The node remembers the directories it has made or found, so as not to look for them on every write: one removed
    behind its back is made again by the next write there, whole or streamed, as when it looked every time."""
    async with DurableWrite(disk, layout, 1) as file:
        await file.write_whole(b"first")
    layout.remove(1)
    for file_id, streamed in ((2, False), (3, True)):
        shutil.rmtree(layout.root / "g0")
        async with DurableWrite(disk, layout, file_id) as file:
            if streamed:
                await file.create()
                await file.write(PAYLOAD)
                await file.publish()
            else:
                await file.write_whole(PAYLOAD)
        assert entries(layout) == [f"g0/0.{file_id}"]
        layout.remove(file_id)


async def test_writes_go_on_past_the_directories_kept_open(
    disk: Disk, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node keeps OPEN_DIRECTORIES directories open at most, closing the one used longest ago: writes after that
    open their directory again, and land as before."""
    monkeypatch.setattr(directories, "OPEN_DIRECTORIES", 1)
    opened_before = len(os.listdir("/proc/self/fd"))
    for file_id in range(1, 81):  # slots 0-79: the leaves g0, g1/0 and g1/1
        async with DurableWrite(disk, layout, file_id) as file:
            await file.write_whole(b"x")
    assert len(entries(layout)) == 80
    assert layout.path(80) == layout.root / "g1" / "1" / "7.80"
    assert len(os.listdir("/proc/self/fd")) == opened_before + 1  # the last leaf's


async def test_an_empty_whole_file_is_kept(disk: Disk, layout: Layout) -> None:
    """A small file is synced by its one write (O_SYNC); an empty one has no write, and is synced on its own."""
    async with DurableWrite(disk, layout, 7, 0, hashlib.sha256(b"").digest()) as file:
        assert await file.write_whole(b"") == (0, hashlib.sha256(b"").digest())
    assert entries(layout) == ["g0/0.7"]
    assert (layout.root / "g0" / "0.7").stat().st_size == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root; skipped otherwise)."""
    with small_tmpfs(tmp_path / "tiny", "64k") as mount_point:
        yield mount_point


@pytest.mark.parametrize(
    "how", ["streamed", "streamed in several batches", "several batches, announced large", "whole"]
)
async def test_a_full_disk_is_storage_full_and_keeps_nothing(disk: Disk, tiny_disk: Path, how: str) -> None:
    layout = Layout(tiny_disk)
    layout.load()
    too_big = b"x" * (3 * BATCH_BYTES if "several batches" in how else 256 * 1024)
    announced = DIRECT_MIN if "large" in how else None  # tmpfs refuses O_DIRECT: written through the cache
    with pytest.raises(StorageFull, match="storage full"):
        async with DurableWrite(disk, layout, 7, announced) as file:
            if how == "whole":
                await file.write_whole(too_big)
            else:
                await file.create()
                for start in range(0, len(too_big), 16 * 1024):
                    await file.write(too_big[start : start + 16 * 1024])
                await file.publish()
    assert_nothing_kept(layout)
    await assert_slot_free(disk, layout)

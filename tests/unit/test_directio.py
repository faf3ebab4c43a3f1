"""A large file written around the page cache (dfsd/directio.py): the file holds exactly the bytes given, in order,
whatever the sizes of the pieces, where the file system takes direct writes and where it refuses them; the descriptor
is handed back with ``O_DIRECT`` off, after success and after a failure alike."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfsd.directio import ALIGNMENT, STAGE_BYTES, DirectFile

O_DIRECT = getattr(os, "O_DIRECT", 0)

# Pieces that fill the stage exactly, cross it, stop off a block boundary, or are empty.
PIECES = [
    [STAGE_BYTES, STAGE_BYTES],
    [1024 * 1024] * 9,
    [ALIGNMENT] * 3,
    [1],
    [5000, STAGE_BYTES, 7, STAGE_BYTES - 7],
    [],
    [3 * 1024 * 1024, 0, 3 * 1024 * 1024, 100],
]


def directories(tmp_path: Path) -> Iterator[Path]:
    """The test's own directory, and one on tmpfs (which refuses ``O_DIRECT``) where the system has one."""
    yield tmp_path
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        yield shm


def direct_flag(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT


@pytest.mark.parametrize("sizes", PIECES)
def test_the_file_holds_every_byte_given_in_order(tmp_path: Path, sizes: list[int]) -> None:
    for directory in directories(tmp_path):
        pieces = [os.urandom(size) for size in sizes]
        path = directory / f"direct-{os.getpid()}.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with DirectFile(fd) as file:
                for piece in pieces:
                    file.write(memoryview(piece))
            assert not direct_flag(fd)
            assert os.lseek(fd, 0, os.SEEK_CUR) == sum(sizes)
        finally:
            os.close(fd)
            data = path.read_bytes()
            path.unlink()
        assert data == b"".join(pieces)


def test_flush_writes_everything_given_and_later_writes_follow_it(tmp_path: Path) -> None:
    first, second = os.urandom(STAGE_BYTES + 10), os.urandom(2 * STAGE_BYTES)
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with DirectFile(fd) as file:
            file.write(first)
            file.flush()
            assert path.read_bytes() == first
            file.write(second)
    finally:
        os.close(fd)
    assert path.read_bytes() == first + second


def test_a_failure_drops_what_is_staged_and_turns_direct_writes_off(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(RuntimeError), DirectFile(fd) as file:
            file.write(os.urandom(STAGE_BYTES + 10))
            raise RuntimeError("the download failed")
        assert not direct_flag(fd)
        # The staged rest is not written (through the cache, where direct writes are refused, it was at once).
        assert os.lseek(fd, 0, os.SEEK_END) in (STAGE_BYTES, STAGE_BYTES + 10)
    finally:
        os.close(fd)

"""Bytes between the event loop and a file through a thread (dfsd/bulk.py): every byte arrives, in order,
and a writer never holds more than two batches however far its file falls behind."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from dfsd.bulk import BATCH_BYTES, ThreadedWriter, write_all

CHUNK = 1024 * 1024


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


async def test_writers_write_and_hash_every_byte_in_order(tmp_path: Path) -> None:
    """A file's writer and a hasher's, fed the same chunks, as a node taking an upload feeds them."""
    payload = os.urandom(2 * BATCH_BYTES + 12345)
    hasher = hashlib.sha256()
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        writers = [ThreadedWriter(lambda data: write_all(fd, data)), ThreadedWriter(hasher.update)]
        for chunk in chunks_of(payload, 100_000):  # frames that do not divide a batch
            for writer in writers:
                await writer.write(chunk)
        for writer in writers:
            await writer.flush()
    finally:
        os.close(fd)
    assert path.read_bytes() == payload
    assert hasher.digest() == hashlib.sha256(payload).digest()


async def test_a_writer_behind_its_file_holds_two_batches_and_waits() -> None:
    """The thread is stuck on the first batch: the second fills, and the write that would start a third waits."""
    entered, release = threading.Event(), threading.Event()
    written = io.BytesIO()

    def write(data: object) -> None:
        entered.set()
        release.wait()
        written.write(data)  # type: ignore[arg-type]

    writer = ThreadedWriter(write)
    await writer.write(b"a" * BATCH_BYTES)  # handed to the thread at once
    await asyncio.to_thread(entered.wait)
    await writer.write(b"b" * (BATCH_BYTES - 1))  # fills the next batch, which does not wait yet
    third = asyncio.create_task(writer.write(b"c"))  # completes the batch: waits for the thread
    done, _ = await asyncio.wait([third], timeout=0.2)
    assert not done
    release.set()
    await third
    await writer.flush()
    assert written.getvalue() == b"a" * BATCH_BYTES + b"b" * (BATCH_BYTES - 1) + b"c"


async def test_a_failed_write_is_raised_and_settle_leaves_no_thread_behind() -> None:
    def fail(data: object) -> None:
        raise OSError(28, "No space left on device")

    writer = ThreadedWriter(fail)
    await writer.write(b"x" * BATCH_BYTES)
    with pytest.raises(OSError, match="No space left"):
        await writer.flush()
    await writer.write(b"y")
    await writer.settle()  # nothing in the thread now: returns at once

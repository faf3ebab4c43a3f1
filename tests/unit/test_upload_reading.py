"""How an uploading client reads its source (dfsd/client.py, ``_chunks``): every byte, in order and hashed, whatever
the source; a regular file is read ahead by a thread, and closing the reader waits for that thread, so a retried
upload never rewinds a file a thread still reads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from dfsd.client import CHUNK_SIZE, READ_BATCH, _chunks

TRIP = READ_BATCH * CHUNK_SIZE


async def read_all(source: object) -> tuple[bytes, bytes]:
    """The bytes ``_chunks`` yields for ``source``, and the SHA-256 it fed."""
    hasher = hashlib.sha256()
    got = bytearray()
    async with contextlib.aclosing(_chunks(source, hasher)) as chunks:  # type: ignore[arg-type]
        async for chunk in chunks:
            assert len(chunk) <= CHUNK_SIZE
            got += chunk
    return bytes(got), hasher.digest()


async def test_every_source_is_read_whole_and_hashed(tmp_path: Path) -> None:
    payload = os.urandom(2 * TRIP + 12345)  # trips that do not divide the file
    path = tmp_path / "source"
    path.write_bytes(payload)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 3 * CHUNK_SIZE + 7):
            yield payload[start : start + 3 * CHUNK_SIZE + 7]

    read_pipe, write_pipe = os.pipe()
    with open(path, "rb") as file, open(read_pipe, "rb", buffering=0) as pipe:
        os.close(write_pipe)  # an empty pipe at its end: no bytes
        sources = {"file": file, "bytes": payload, "chunks": pieces(), "pipe": pipe}
        expected = {"file": payload, "bytes": payload, "chunks": payload, "pipe": b""}
        for what, source in sources.items():
            data, digest = await read_all(source)
            assert data == expected[what], what
            assert digest == hashlib.sha256(expected[what]).digest(), what


async def test_a_reader_closed_early_leaves_no_thread_reading_repro(tmp_path: Path) -> None:
    """Closing the reader after its first chunk returns only once the trip read ahead meanwhile is done: the file's
    offset is then two trips on and stays there, and rewinding it reads the file again from the start."""
    payload = os.urandom(4 * TRIP)
    path = tmp_path / "source"
    path.write_bytes(payload)
    with open(path, "rb") as file:
        chunks = _chunks(file, hashlib.sha256())
        first = await anext(chunks)
        await chunks.aclose()
        assert file.tell() == 2 * TRIP  # the first trip, and the one read ahead of it, finished
        file.seek(0)
        data, _ = await read_all(file)
    assert bytes(first) == payload[:CHUNK_SIZE]
    assert data == payload


async def test_a_pipe_is_read_only_when_asked() -> None:
    """A pipe is read on demand: once the reader has given its first chunk, nothing more is read from the pipe (a
    failed upload must not wait for input that may not come)."""
    payload = os.urandom(2 * CHUNK_SIZE)
    read_pipe, write_pipe = os.pipe()

    def feed() -> None:  # more than a pipe holds: it waits for a reader
        with open(write_pipe, "wb") as end:
            end.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with open(read_pipe, "rb") as pipe:
            chunks = _chunks(pipe, hashlib.sha256())
            first = await anext(chunks)
            await chunks.aclose()
            rest = pipe.read()  # what nobody read meanwhile, up to the writer's end
    finally:
        writer.join()
    assert bytes(first) == payload[:CHUNK_SIZE]
    assert rest == payload[CHUNK_SIZE:]

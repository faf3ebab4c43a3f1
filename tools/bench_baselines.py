"""The baselines dfs-bench divides dfsd's figures by: the same work done with nothing but uvloop sockets, cbor2 and a
file, measured in the same run, so that the ratios hold up on a busy or noisy machine.

(a) Streaming. dfsd moves a large file client → manager → node → disk. The baseline moves the same bytes through the
same hops with no protocol at all: the benchmark's client → a relay process → a sink process, which writes them to a
file on the same disk and fsyncs it at the end before it answers; and back (the sink reads the file, the relay forwards
it, the client receives it). Every hop forwards bytes as they arrive and waits whenever the next hop's write buffer is
full. The sockets keep the system's buffer sizes and asyncio's write limits, with Nagle's delay off (as any
request-and-answer server sets it): plain settings, nothing of dfsd's own tuning, so the figure is what this machine's
loopback, page cache and disk give three Python processes.

(b) Round trips. A bare server answers each request frame (a 4-byte big-endian length, then a CBOR map, as in dfsd)
with one answer frame, one hop over loopback, storing nothing. The clients are the benchmark's, with as many
connections and the same payloads as the dfsd phase they are compared with: a write carries the file's bytes in the
request, a read in the answer, a delete in neither.

(c) Durable creates. dfsd acknowledges a write only once the node has fsynced the file and the directory entry its
rename made. The baseline does just that on the same disk, with as many threads as there are clients and nothing
else: create a partial file, write the bytes, fsync, rename into place, fsync the directory. No write of any file
server on this disk that keeps that promise can go faster, so it shows how much of a small write is the disk's.

The servers run as processes of their own, ``python -m dfsd.tools.bench_baselines relay|sink|echo``; like the dfsd
daemons each prints one line ``dfs-bench ROLE listening on HOST:PORT`` once it accepts connections, and runs until it
is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import struct
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import cbor2

from dfsd.client import run

# How much one read may take off a socket or the file: the benchmark's block, 1 MiB.
READ_SIZE = 1024 * 1024

# A stream request to the sink: b"P" (put: LENGTH bytes follow) or b"G" (get: send the first LENGTH bytes back).
STREAM_HEADER = struct.Struct(">cQ")
PUT, GET = b"P", b"G"
# The sink's answer to a put, sent once the file is fsynced.
STORED = b"K"

FRAME_LENGTH = struct.Struct(">I")


def tune(transport: asyncio.BaseTransport) -> None:
    """Nagle's delay off, so a small frame leaves at once; everything else as the system and asyncio set it."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _connect(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address, limit=READ_SIZE)
    tune(writer.transport)
    return reader, writer


# --- (a) streaming: the client end ------------------------------------------------------------------------------------


async def upload(address: tuple[str, int], size: int, chunks: AsyncIterable[bytes]) -> None:
    """Send ``size`` bytes of ``chunks`` through the relay to the sink; returns once the sink has fsynced them."""
    reader, writer = await _connect(address)
    try:
        writer.write(STREAM_HEADER.pack(PUT, size))
        async for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        if await reader.read(1) != STORED:
            raise ConnectionError("the baseline sink did not confirm the upload (see its log)")
    finally:
        writer.close()


async def download(address: tuple[str, int], size: int) -> AsyncIterator[bytes]:
    """The first ``size`` bytes of the sink's file, through the relay, as they arrive."""
    reader, writer = await _connect(address)
    try:
        writer.write(STREAM_HEADER.pack(GET, size))
        remaining = size
        while remaining:
            chunk = await reader.read(min(READ_SIZE, remaining))
            if not chunk:
                raise ConnectionError(f"the baseline stream ended {remaining} bytes early (see the sink's log)")
            remaining -= len(chunk)
            yield chunk
    finally:
        writer.close()


# --- (a) streaming: the relay and the sink ----------------------------------------------------------------------------


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]) -> None:
    """Forward both directions between the client and the sink until each side has finished sending."""
    tune(writer.transport)
    target_reader, target_writer = await _connect(target)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(reader, target_writer))
            group.create_task(_pump(target_reader, writer))
    finally:
        target_writer.close()
        writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: Path) -> None:
    """Write a put's bytes to ``path`` and fsync them (like a storage node), or send a get's bytes from it."""
    tune(writer.transport)
    try:
        op, length = STREAM_HEADER.unpack(await reader.readexactly(STREAM_HEADER.size))
        if op == PUT:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                remaining = length
                while remaining:
                    data = await reader.read(min(READ_SIZE, remaining))
                    if not data:
                        raise ConnectionError(f"the upload ended {remaining} bytes early")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    remaining -= len(data)
                await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
            finally:
                os.close(fd)
            writer.write(STORED)
        else:
            fd = os.open(path, os.O_RDONLY)
            try:
                position = 0
                while position < length:
                    chunk = os.pread(fd, min(READ_SIZE, length - position), position)
                    if not chunk:
                        raise ConnectionError(f"the file holds only {position} of the {length} bytes asked for")
                    writer.write(chunk)
                    position += len(chunk)
                    await writer.drain()
            finally:
                os.close(fd)
        await writer.drain()
    finally:
        writer.close()


# --- (b) round trips --------------------------------------------------------------------------------------------------


def durable_creates(directory: Path, payloads: Sequence[bytes], threads: int) -> tuple[float, list[float]]:
    """Create one file per payload in ``directory``, durably, from ``threads`` threads at once; return the seconds it
    took in all and each create's latency. The files are removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)

    def create(index: int) -> float:
        start = time.perf_counter()
        partial, final = directory / f"{index}.part", directory / str(index)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, payloads[index])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(partial, final)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        return time.perf_counter() - start

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            latencies = list(pool.map(create, range(len(payloads))))
        return time.perf_counter() - start, latencies
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class BareClient:
    """One connection to the echo server: a request frame out, then its answer frame back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, address: tuple[str, int]) -> BareClient:
        return cls(*await _connect(address))

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        body = cbor2.dumps(request)
        self._writer.writelines((FRAME_LENGTH.pack(len(body)), body))
        await self._writer.drain()
        (length,) = FRAME_LENGTH.unpack(await self._reader.readexactly(FRAME_LENGTH.size))
        answer: dict[str, Any] = cbor2.loads(await self._reader.readexactly(length))
        return answer

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class _Answerer(asyncio.Protocol):
    """The echo server's side of one connection: each complete frame is decoded and answered at once."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        tune(self._transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while len(self._buffer) >= FRAME_LENGTH.size:
            (length,) = FRAME_LENGTH.unpack_from(self._buffer)
            end = FRAME_LENGTH.size + length
            if len(self._buffer) < end:
                return
            request = cbor2.loads(bytes(self._buffer[FRAME_LENGTH.size : end]))
            del self._buffer[:end]
            body = cbor2.dumps(self._answer(request))
            self._transport.writelines((FRAME_LENGTH.pack(len(body)), body))

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request["type"]
        if kind == "put":
            return {"type": "stored", "size": len(request["data"])}
        if kind == "get":
            return {"type": "data", "data": self._payload[: request["length"]]}
        return {"type": "ok"}


# --- the server processes ---------------------------------------------------------------------------------------------

# The largest answer payload the echo server sends (the largest small file the benchmark uses is 64 KiB).
ECHO_PAYLOAD = 1024 * 1024


async def _serve(role: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server: asyncio.Server
    if role == "relay":
        host, _, port = args.to.rpartition(":")
        target = (host, int(port))
        server = await asyncio.start_server(lambda r, w: _relay(r, w, target), "127.0.0.1", 0, limit=READ_SIZE)
    elif role == "sink":
        server = await asyncio.start_server(lambda r, w: _sink(r, w, args.file), "127.0.0.1", 0, limit=READ_SIZE)
    else:
        payload = os.urandom(ECHO_PAYLOAD)
        server = await loop.create_server(lambda: _Answerer(payload), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"dfs-bench {role} listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfsd.tools.bench_baselines", description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    relay = roles.add_parser("relay", help="forward each connection to --to, both ways")
    relay.add_argument("--to", required=True, metavar="HOST:PORT")
    sink = roles.add_parser("sink", help="write uploads to --file and fsync; serve downloads from it")
    sink.add_argument("--file", required=True, type=Path)
    roles.add_parser("echo", help="answer CBOR request frames")
    args = parser.parse_args(argv)
    run(_serve(args.role, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

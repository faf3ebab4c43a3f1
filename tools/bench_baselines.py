"""The baselines dfs-bench divides dfsd's figures by: the same work done with nothing but sockets, cbor2 and a file,
measured in the same run, so that the ratios hold up on a busy or noisy machine.

(a) Streaming: the best this machine does with no protocol at all. dfsd moves a large file client → manager → node →
disk; the baseline moves the same bytes through the same three hops, as three processes, onto the same disk:

* the client (``send``) hands a file on disk to the kernel with ``socket.sendfile``, no copy through Python;
  with ``--sha256`` it also hashes the file (SHA-256, in a second thread, while it is sent) and sends the digest after
  the bytes, and the sink hashes what it receives (in its writing thread) and answers only if the two agree: the
  end-to-end check ``dfs-push`` must make, for an informative second baseline beside it, so that the protocol's cost
  can be read apart from the checksum's (each end's SHA-256 of 1 GiB costs about 0.5 s of CPU here, a 2-core machine
  whose three processes share those two cores);
* a relay (``relay``, uvloop) forwards whatever arrives, both ways, pausing a side while the other's write buffer is
  full — the manager's place;
* a sink (``sink``) receives into one of two buffers while a second thread writes the other to its file around the
  page cache (``O_DIRECT``, where the file system allows it), fsyncing it at the end before it answers (a storage
  node's promise). Written through the cache instead, a 1 GiB file cost the writer 1.2 to 2.0 s of system time in
  the kernel's copy into cache pages and took 3.3 to 5.6 s to reach the disk, against 0.1 s and 1.4 to 1.6 s written
  directly (measured on this machine with ``dd``): the cached sink was slower at the disk step than dfsd's nodes,
  which write large files directly, so it was no ceiling. A download it serves with ``socket.sendfile``, once
  dfs-bench has had the file read into the page cache, untimed: from memory, the fastest a download can be (a node
  reads its copy from the disk, 4 MiB ahead);
* the download client (``receive``) writes what arrives the way ``dfs-cat -o`` promises to, and as fast as this
  machine allows: into a temporary file beside the target, renamed into place once complete, written around the page
  cache by a second thread while the next buffer fills, as ``dfs-cat -o`` writes too (1 GiB, 3 pairs on this machine:
  0.81 to 0.88 s and 0.21 to 0.23 s of system time, against 0.78 to 1.25 s and 0.34 to 0.96 s through the cache).
  ``dfs-cat -o`` does not fsync its output, so neither does this (the day it does, this must too). Without
  ``--output`` it drops the bytes, the ceiling for the client library's ``get``, which keeps them in memory. With
  ``--sha256`` it also hashes them (in the second thread, overlapped with the receiving), as dfsd's client must to
  keep its end-to-end promise: an informative second baseline for ``dfs-cat -o``, so that the protocol's cost can be
  read apart from the checksum's.

Every socket gets large kernel buffers (SOCKET_BUFFER) and Nagle's delay off. The constants are this module's own,
chosen for the fastest plain transfer, never dfsd's: the point is the machine's ceiling, not dfsd measured against
itself.

(b) Round trips. A bare server answers each request frame (a 4-byte big-endian length, then a CBOR map, as in dfsd)
with one answer frame, one hop over loopback, storing nothing. The clients are the benchmark's, with as many
connections and the same payloads as the dfsd phase they are compared with: a write carries the file's bytes in the
request, a read in the answer, a delete in neither.

(c) Durable creates. dfsd acknowledges a write only once the node has fsynced the file and the directory entry that
names it, and no directory of a node holds more than 36 entries. The baseline does the least any file server must do
for that on the same disk, with as many threads as there are clients and nothing else: create the file at its name,
write the bytes, fsync it, fsync its directory; the files go DIRECTORY_ENTRIES to a directory, in directories nested
so that none holds more, each made when the first file needs it and its parent fsynced then (a file in a directory
that a crash could lose is not durable). No write of any file server on this disk that keeps those promises can go
faster, so it shows how much of a small write is the disk's. (It first put all the files in one directory, which no
node may do; on a busy machine the two layouts measured within each other's noise. It also wrote each file under a
partial name and renamed it into place, as dfsd's nodes then did for every file: a step a server may choose, not one
durability needs, so it went when the nodes stopped taking it for small files.)

On an ext4 without a journal (this machine's), the figure swings with the deletes of the minutes before, of any process:
such an ext4 does not reuse an inode freed less than 60 s ago (300 s while its inode-table block is unwritten), and each
new file's allocation steps past every such inode of its block group, one buffer lookup each, starting from the group's
first inode (``find_inode_bit``, ``recently_deleted`` in the kernel's fs/ext4/ialloc.c). Measured with perf on a process
creating 3,000 1 KiB files durably from 16 threads, after earlier runs (its own and others) had deleted thousands: 46 %
and 72 % of its CPU time (two runs) went to that step, and a create took 0.3 to 0.8 ms of system time, against 0.16 ms
in the best run of the same hour. dfsd's nodes create their files the same way, so both sides of the ratio pay it;
compare runs only when the same number of deletes came in the five minutes before each (two back-to-back runs do not:
the second follows the first's). Within a run, the durable creates' own files therefore stay until the run ends: the
write phase of the next target (PostgreSQL's, after SQLite's) would otherwise follow their 20,000 deletes.

The servers run as processes of their own, ``python -m dfsd.tools.bench_baselines relay|sink|echo``; like the dfsd
daemons each prints one line ``dfs-bench ROLE listening on HOST:PORT`` once it accepts connections, and runs until it
is terminated. ``send`` and ``receive`` are one-shot commands, timed as processes like ``dfs-push`` and ``dfs-cat``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import itertools
import mmap
import os
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import cbor2

from dfsd.client import run

# Kernel socket buffers for streaming (SO_SNDBUF, SO_RCVBUF): large enough that a hop never waits on a small window.
SOCKET_BUFFER = 4 * 1024 * 1024
# How much the sink and the download client take off a socket at once (into one reused buffer), and how much the
# relay lets queue for a slow side before it stops reading the other.
STREAM_READ = 4 * 1024 * 1024
RELAY_WRITE_LIMIT = 4 * 1024 * 1024

# The alignment of the sink's direct writes (memory, offset and length): the page size, a multiple of the common
# logical block sizes.
DIRECT_ALIGNMENT = mmap.PAGESIZE

# A stream request to the sink: b"P" (put: LENGTH bytes follow), b"H" (hashed put: LENGTH bytes, then their SHA-256)
# or b"G" (get: send the first LENGTH bytes back).
STREAM_HEADER = struct.Struct(">cQ")
PUT, PUT_HASHED, GET = b"P", b"H", b"G"
# The sink's answer to a put, sent once the file is fsynced; to a hashed put whose bytes hash otherwise, MISMATCH.
STORED, MISMATCH = b"K", b"X"
SHA256_BYTES = 32

FRAME_LENGTH = struct.Struct(">I")

# The most entries a directory of the durable creates holds: the rule every dfsd storage node keeps.
DIRECTORY_ENTRIES = 36


def tune(transport: asyncio.BaseTransport) -> None:
    """Nagle's delay off, so a small frame leaves at once; everything else as the system and asyncio set it."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tune_for_streaming(sock: Any) -> None:
    """Large kernel buffers both ways and Nagle's delay off (``sock``: a socket, or uvloop's stand-in for one)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# --- (a) streaming: the clients ---------------------------------------------------------------------------------------


def _stream_connection(address: tuple[str, int], op: bytes, length: int) -> socket.socket:
    sock = socket.create_connection(address)
    tune_for_streaming(sock)
    sock.sendall(STREAM_HEADER.pack(op, length))
    return sock


def send(address: tuple[str, int], path: Path, sha256: bool = False) -> None:
    """Send the file at ``path`` through the relay to the sink; return once the sink has fsynced it. With ``sha256``,
    hash the file in a second thread while it is sent, and send the digest after it for the sink to check."""
    size = path.stat().st_size
    with (
        _stream_connection(address, PUT_HASHED if sha256 else PUT, size) as sock,
        open(path, "rb") as file,
        ThreadPoolExecutor(1) as thread,
    ):
        hashing = thread.submit(_sha256_of, path) if sha256 else None
        if sock.sendfile(file) != size:
            raise ConnectionError(f"{path} changed size while it was sent")
        if hashing is not None:
            sock.sendall(hashing.result())
        answer = sock.recv(1)
        if answer == MISMATCH:
            raise ConnectionError("the baseline sink received bytes that hash otherwise than the file sent")
        if answer != STORED:
            raise ConnectionError("the baseline sink did not confirm the upload (see its log)")


def _sha256_of(path: Path) -> bytes:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def _receive_into(sock: socket.socket, length: int, fd: int | None) -> None:
    """Take ``length`` bytes off ``sock``, writing them to ``fd`` around the page cache in a second thread
    (``_receive_overlapped``, ``_write_direct``), or dropping them (``fd`` None)."""
    if fd is not None:
        _receive_overlapped(sock, length, functools.partial(_write_direct, _go_direct(fd)))
        return
    buffer = memoryview(bytearray(STREAM_READ))
    remaining = length
    while remaining:
        remaining -= _receive_some(sock, buffer, remaining)


def _receive_hashed(sock: socket.socket, length: int, fd: int | None) -> bytes:
    """As ``_receive_into``, and the bytes fed to SHA-256 too, in the second thread, as a client that checks what it
    receives would do it at best; their digest."""
    hasher = hashlib.sha256()
    direct = None if fd is None else _go_direct(fd)

    def take(data: memoryview) -> None:
        hasher.update(data)
        if direct is not None:
            _write_direct(direct, data)

    _receive_overlapped(sock, length, take)
    return hasher.digest()


def _receive_overlapped(sock: socket.socket, length: int, take: Callable[[memoryview], None]) -> None:
    """Take ``length`` bytes off ``sock`` into one of two page-aligned buffers while a second thread hands the other
    to ``take``."""
    buffers = [memoryview(mmap.mmap(-1, STREAM_READ)) for _ in range(2)]
    taking: list[Future[None] | None] = [None, None]  # each buffer's turn in the thread, if under way
    remaining = length
    with ThreadPoolExecutor(1) as thread:
        for turn in itertools.count():
            side = turn % 2
            if (previous := taking[side]) is not None:
                previous.result()  # the buffer is free again
            if not remaining:
                break
            got = _fill(sock, buffers[side], remaining)
            remaining -= got
            taking[side] = thread.submit(take, buffers[side][:got])
        for future in taking:
            if future is not None:
                future.result()


def _fill(sock: socket.socket, buffer: memoryview, remaining: int) -> int:
    """Receive until ``buffer`` is full or the stream's ``remaining`` bytes are in: a handoff to the other thread for
    each receive (often 64 KiB) would cost more than the hashing."""
    want = min(len(buffer), remaining)
    got = 0
    while got < want:
        got += _receive_some(sock, buffer[got:], remaining - got)
    return got


def _receive_some(sock: socket.socket, buffer: memoryview, remaining: int) -> int:
    got = sock.recv_into(buffer, min(len(buffer), remaining))
    if not got:
        raise ConnectionError(f"the baseline stream ended {remaining} bytes early (see the sink's log)")
    return got


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def receive(address: tuple[str, int], length: int, output: Path | None, sha256: bool = False) -> None:
    """Receive the first ``length`` bytes of the sink's file through the relay, into ``output`` as ``dfs-cat -o``
    writes it (a temporary file beside it, renamed into place once whole), or nowhere; with ``sha256``, hashing them
    on the way (``_receive_hashed``)."""
    receive_into = _receive_hashed if sha256 else _receive_into
    with _stream_connection(address, GET, length) as sock:
        if output is None:
            receive_into(sock, length, None)
            return
        fd, partial = tempfile.mkstemp(prefix=".bench-receive-", dir=output.parent)
        try:
            try:
                receive_into(sock, length, fd)
            finally:
                os.close(fd)
            os.replace(partial, output)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)


# --- (a) streaming: the relay -----------------------------------------------------------------------------------------


class _Forwarder(asyncio.Protocol):
    """One side of a relayed connection: what arrives is written to the other side at once; while the other side's
    write buffer is over RELAY_WRITE_LIMIT this side stops reading, so the relay holds little."""

    def __init__(self, peer: _Forwarder | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        if peer is not None:
            peer.peer = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        tune_for_streaming(self.transport.get_extra_info("socket"))
        self.transport.set_write_buffer_limits(high=RELAY_WRITE_LIMIT)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        assert self.peer is not None and self.peer.transport is not None
        if self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True  # keep the other direction open until it ends too

    def pause_writing(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _RelayedClient(_Forwarder):
    """The client's side: what arrives before the connection to the sink is open waits, with reading paused."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self._target = target
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())
        self._connecting.add_done_callback(self._connected)

    async def _connect(self) -> None:
        await asyncio.get_running_loop().create_connection(lambda: _Forwarder(self), *self._target)

    def data_received(self, data: bytes) -> None:
        if self._connecting.done():
            super().data_received(data)
        else:
            assert self.transport is not None
            self._early.append(data)
            self.transport.pause_reading()

    def _connected(self, task: asyncio.Task[None]) -> None:
        assert self.transport is not None
        if task.cancelled() or task.exception() is not None:
            self.transport.close()
            return
        for data in self._early:
            super().data_received(data)
        self._early.clear()
        self.transport.resume_reading()


# --- (a) streaming: the sink ------------------------------------------------------------------------------------------


class _SinkHandler(socketserver.BaseRequestHandler):
    """A put: receive into the file, fsync, answer STORED. A hashed put: the same, hashing the bytes as they are
    written, then MISMATCH in place of STORED if the digest that follows them says otherwise. A get: sendfile the
    file's first LENGTH bytes."""

    server: _SinkServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        tune_for_streaming(sock)
        header = sock.recv(STREAM_HEADER.size, socket.MSG_WAITALL)
        op, length = STREAM_HEADER.unpack(header)
        if op in (PUT, PUT_HASHED):
            fd = os.open(self.server.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                answer = STORED
                if op == PUT_HASHED:
                    digest = _receive_hashed(sock, length, fd)
                    if sock.recv(SHA256_BYTES, socket.MSG_WAITALL) != digest:
                        answer = MISMATCH
                else:
                    _receive_into(sock, length, fd)
                os.fsync(fd)
                sock.sendall(answer)
            finally:
                os.close(fd)
        else:
            with open(self.server.path, "rb") as file:
                if sock.sendfile(file, 0, length) != length:
                    raise ConnectionError(f"the file holds fewer than the {length} bytes asked for")


def _go_direct(fd: int) -> int:
    """Have ``fd`` written around the page cache (``O_DIRECT``) where its file system allows it (not tmpfs); return
    it."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    return fd


def _write_direct(fd: int, data: memoryview) -> None:
    """Write ``data`` (page-aligned memory, at an aligned offset): its whole blocks directly, and a partial last block
    (the file's end) through the cache."""
    whole = len(data) - len(data) % DIRECT_ALIGNMENT
    _write_all(fd, data[:whole])
    if whole < len(data):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        _write_all(fd, data[whole:])


class _SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, path: Path) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.path = path


# --- (b) round trips --------------------------------------------------------------------------------------------------


def durable_creates(directory: Path, payloads: Sequence[bytes], threads: int) -> tuple[float, list[float]]:
    """Create one file per payload below ``directory`` (``create_path``), durably, from ``threads`` threads at once;
    return the seconds it took in all and each create's latency. The files stay (until the run's temporary directory
    goes): removed here, they would free as many inodes just before the next target's write phase, whose creates on
    this machine's ext4 would then step past every one of them (see (c) in the module's docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    making = threading.Lock()

    def make_directories(folder: Path) -> None:
        """``folder`` and the parents it lacks, each made durable (its parent fsynced) before any file goes in."""
        with making:
            missing = []
            while not folder.is_dir():
                missing.append(folder)
                folder = folder.parent
            for path in reversed(missing):
                path.mkdir()
                _fsync_directory(path.parent)

    def create(index: int) -> float:
        start = time.perf_counter()
        final = create_path(directory, index, len(payloads))
        make_directories(final.parent)
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, payloads[index])
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_directory(final.parent)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        latencies = list(pool.map(create, range(len(payloads))))
    return time.perf_counter() - start, latencies


def create_path(directory: Path, index: int, count: int) -> Path:
    """Where durable create ``index`` of ``count`` goes: DIRECTORY_ENTRIES files to a leaf directory, the leaves named
    by the digits of their number (base DIRECTORY_ENTRIES, as many as the last leaf needs), one directory level each,
    so that no directory holds more than DIRECTORY_ENTRIES entries (``directory`` itself included)."""
    leaf, name = divmod(index, DIRECTORY_ENTRIES)
    levels = 1
    while DIRECTORY_ENTRIES**levels < -(-count // DIRECTORY_ENTRIES):
        levels += 1
    digits = []
    for _ in range(levels):
        leaf, digit = divmod(leaf, DIRECTORY_ENTRIES)
        digits.append(str(digit))
    return directory.joinpath(*reversed(digits), str(name))


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _connect(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    tune(writer.transport)
    return reader, writer


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


def _ready(role: str, address: tuple[str, int]) -> None:
    print(f"dfs-bench {role} listening on {address[0]}:{address[1]}", flush=True)


async def _serve(role: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    if role == "relay":
        target = _address(args.to)
        server = await loop.create_server(lambda: _RelayedClient(target), "127.0.0.1", 0)
    else:
        payload = os.urandom(ECHO_PAYLOAD)
        server = await loop.create_server(lambda: _Answerer(payload), "127.0.0.1", 0)
    _ready(role, server.sockets[0].getsockname()[:2])
    async with server:
        await server.serve_forever()


def _serve_sink(path: Path) -> None:
    with _SinkServer(path) as server:
        _ready("sink", server.socket.getsockname()[:2])
        server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfsd.tools.bench_baselines", description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    relay = roles.add_parser("relay", help="forward each connection to --to, both ways")
    relay.add_argument("--to", required=True, metavar="HOST:PORT")
    sink = roles.add_parser("sink", help="write uploads to --file and fsync; serve downloads from it")
    sink.add_argument("--file", required=True, type=Path)
    roles.add_parser("echo", help="answer CBOR request frames")
    sender = roles.add_parser("send", help="send FILE through the relay at --to to the sink; exit once it is fsynced")
    sender.add_argument("--to", required=True, metavar="HOST:PORT")
    sender.add_argument("--sha256", action="store_true", help="hash it too, for the sink to check (a second thread)")
    sender.add_argument("file", type=Path)
    receiver = roles.add_parser("receive", help="receive LENGTH bytes of the sink's file through the relay at --to")
    receiver.add_argument("--to", required=True, metavar="HOST:PORT")
    receiver.add_argument("--length", required=True, type=int)
    receiver.add_argument("-o", "--output", type=Path, help="write them as dfs-cat -o does (default: drop them)")
    receiver.add_argument("--sha256", action="store_true", help="hash them with SHA-256 too, in a second thread")
    args = parser.parse_args(argv)
    if args.role == "send":
        send(_address(args.to), args.file, args.sha256)
    elif args.role == "receive":
        receive(_address(args.to), args.length, args.output, args.sha256)
    elif args.role == "sink":
        _serve_sink(args.file)
    else:
        run(_serve(args.role, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A storage node: keeps whole files on its own disk and does what the manager asks.

The node serves data connections on its own port: the manager's (``store``, ``fetch``, ``remove``, ``transfer``) and
other nodes' (``store``, when the manager has one node copy a file to another). It keeps one control session open to
the manager: it registers there (id, the address it serves on, disk size and free bytes), sends the ids of every file
it holds (the manager reconciles them with its records), and heartbeats; the manager answers each beat. The manager
considers the node up exactly while that session lives; the node considers the session dead when the manager stops
answering. Either way the node dials again, with exponential backoff and jitter, forever.

A file is written to a partial entry in its slot, hashed as it arrives, fsynced, renamed into place and its directory
fsynced; only then does the node answer ``stored``. Any failure on the way removes the partial entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import io
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import structlog

from .. import metrics
from ..protocol import (
    CHUNK_SIZE,
    INLINE_MAX,
    INVENTORY_PAGE,
    BadRequest,
    ChecksumMismatch,
    DfsError,
    FileNotFound,
    FileUnavailable,
    InternalError,
    ProtocolError,
    StorageFull,
    check_inline,
    check_range,
    check_sha256,
)
from ..protocol.messages import (
    Data,
    End,
    Fetch,
    Heartbeat,
    Inventory,
    Message,
    Ok,
    Register,
    Remove,
    Sending,
    Store,
    Stored,
    Transfer,
    Verify,
)
from ..service import Handler, Listener, Request, serve_requests
from ..settings import Limits, Security
from ..wire import OPEN, Connection, ConnectionLost, receive_stream, send_stream, send_upload
from .disk import Disk
from .layout import Layout

log = structlog.get_logger("dfsd.storage")

# Reconnection to the manager: first retry after ~0.1 s, doubling up to 5 s, each delay jittered by ±50 % so that many
# nodes restarted together do not knock on the manager in step.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class StorageNode:
    def __init__(
        self,
        node_id: int,
        data_dir: Path,
        manager: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: tuple[str, int | None] | None = None,
        heartbeat_interval: float = 1.0,
        manager_timeout: float = 5.0,
        security: Security = OPEN,
        limits: Limits | None = None,
        grace: float = 10.0,
        metrics_port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.layout = Layout(data_dir)
        self.disk = Disk()
        self.manager = manager
        self.host = host
        self.port = port
        self.advertise = advertise
        self.heartbeat_interval = heartbeat_interval
        self.manager_timeout = manager_timeout
        self.security = security
        self.limits = limits or Limits()
        self.grace = grace
        self.metrics_port = metrics_port
        self._stopping = asyncio.Event()
        self.log = log.bind(node=node_id)
        self.registered = asyncio.Event()
        self._manager_links: set[Connection] = set()  # data connections the manager has open to us

    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None:
        held = self.layout.load()
        self.log.info("loaded", data=str(self.layout.root), files=len(held), bytes=sum(f.size for f in held))
        from_manager = {
            Store: self.handle_store,
            Fetch: self.handle_fetch,
            Remove: self.handle_remove,
            Transfer: self.handle_transfer,
            Verify: self.handle_verify,
        }
        from_peer = {Store: self.handle_store}
        listener: Listener
        sessions = {
            "manager": lambda conn: self._serve_manager(conn, from_manager, listener),  # type: ignore[arg-type]
            "peer": lambda conn: serve_requests(conn, from_peer, listener),  # type: ignore[arg-type]
        }
        listener = Listener(sessions, self.log, self.security, self.limits)
        self.port = await listener.start(self.host, self.port)
        self.log.info("listening", host=self.host, port=self.port)
        if self.metrics_port is not None:
            self.log.info("metrics", url=f"http://{self.host}:{metrics.serve(self.host, self.metrics_port)}/metrics")
        if on_ready is not None:
            on_ready(self.host, self.port)
        registration = asyncio.create_task(self._stay_registered())
        try:
            await self._stopping.wait()
        finally:
            # Leave the manager first (closing the control session marks the node down at once, so no new work
            # arrives), then let transfers in flight finish.
            registration.cancel()
            await asyncio.gather(registration, return_exceptions=True)
            self.log.info("deregistered", grace_s=self.grace)
            await listener.shutdown(self.grace)
            self.disk.close()
        self.log.info("stopped")

    def stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, Ctrl-C): ``run`` returns once it is done."""
        self._stopping.set()

    # --- control session with the manager -----------------------------------------------------------------------------

    async def _stay_registered(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                conn = await Connection.open(
                    *self.manager, role="node", security=self.security, timeout=self.manager_timeout
                )
            except (ConnectionLost, DfsError) as err:
                self.log.warning("manager_unreachable", error=str(err), retry_in=round(delay, 2))
            else:
                try:
                    await self._session(conn)
                except (ConnectionLost, DfsError) as err:
                    self.log.warning("session_lost", error=str(err))
                finally:
                    if self.registered.is_set():  # a session that got as far as registering restarts the backoff
                        delay = BACKOFF_FIRST
                    self.registered.clear()
                    conn.abort()
                    self._drop_manager_links()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self, conn: Connection) -> None:
        conn.timeout = self.manager_timeout  # registering, too, must not wait forever on a silent manager
        capacity, free = self._disk()
        host, port = self.advertise or (None, None)
        host = host or _advertised_host(self.host, conn)
        port = port or self.port
        await conn.send(Register(self.node_id, host, port, capacity, free))
        held = self.layout.file_ids()
        for start in range(0, max(len(held), 1), INVENTORY_PAGE):
            page = held[start : start + INVENTORY_PAGE]
            await conn.send(Inventory(page, more=start + INVENTORY_PAGE < len(held)))
        await conn.expect(Ok)
        self.registered.set()
        self.log.info("registered", manager=f"{self.manager[0]}:{self.manager[1]}", address=f"{host}:{port}")
        heard = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(self.heartbeat_interval):
                    message = await conn.recv()
            except TimeoutError:
                if time.monotonic() - heard > self.manager_timeout:
                    raise ConnectionLost(f"the manager has not answered for {self.manager_timeout:g} s") from None
                capacity, free = self._disk()
                await conn.send(Heartbeat(free, capacity))
                continue
            if not isinstance(message, Ok):
                raise ProtocolError(f"protocol error: unexpected {message.TYPE} on the control session")
            heard = time.monotonic()

    def _disk(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.layout.root)
        return usage.total, usage.free

    # --- data connections from the manager ----------------------------------------------------------------------------

    async def _serve_manager(
        self, conn: Connection, handlers: Mapping[type[Message], Handler], listener: Listener
    ) -> None:
        """The manager's requests, untimed: it may rightly be slow within one (it relays for a client, and waits for
        it; the manager's own timers bound that client). Its liveness is the control session: when that ends, so do
        these connections (``_drop_manager_links``), as the manager drops its connections to us when it ends."""
        self._manager_links.add(conn)
        try:
            await serve_requests(conn, handlers, listener, timed=False)
        finally:
            self._manager_links.discard(conn)

    def _drop_manager_links(self) -> None:
        for conn in self._manager_links:
            conn.abort()

    async def handle_store(self, conn: Connection, request: Store, req: Request) -> None:
        req.fields.update(file_id=request.file_id)
        check_sha256(request.sha256)
        check_inline(request.data, request.size)
        try:
            partial, made = self.layout.begin(request.file_id)
        except FileExistsError:
            raise BadRequest(f"bad request: this node already holds file id {request.file_id}") from None
        except OSError as err:  # no room even for a directory
            raise _storage_error(err) from err
        final = self.layout.final_path(request.file_id)
        # The rename must be durable too: sync the directory, and the parents of directories made for this file.
        directories = [final.parent, *(path.parent for path in made)]
        fd = -1
        try:
            if request.data is None:
                # Creating (like renaming) needs the directory's lock, which a concurrent fsync of that directory
                # holds: that wait belongs in a thread, not on the event loop.
                fd = await self.disk.run(os.open, partial, _NEW_FILE, 0o644)
                await conn.send(Ok())
                req.receiving = True
                size, digest = await self._receive_into(conn, fd, request, req)
                fd, written = -1, fd  # publish closes it, whatever happens
                publish = functools.partial(Disk.publish, written, partial, final, directories)
            else:
                size, digest = len(request.data), hashlib.sha256(request.data).digest()
                _check_digest(digest, request.sha256)
                publish = functools.partial(_create, partial, request.data, final, directories)
            req.fields.update(size=size)
            wanted = False
            try:
                await self.disk.run(publish)
            finally:
                if final.exists():  # renamed, even if a directory fsync then failed: the file is held
                    wanted = self.layout.committed(request.file_id)
            if not wanted or conn.closed or conn.peer_closed:
                # Removed while it was written, or nobody is left to hear "stored": keeping it would leave an orphan.
                self.layout.remove(request.file_id)
                raise InternalError(f"internal error: file id {request.file_id} was abandoned before it was committed")
        except BaseException as err:
            if fd >= 0:
                os.close(fd)
            self.layout.abandon(request.file_id)
            if isinstance(err, OSError):  # creating, writing or syncing the file: a full disk says so
                raise _storage_error(err) from err
            raise
        try:
            await conn.send(Stored(size, digest))
        except ConnectionLost:
            self.layout.remove(request.file_id)  # the sender never heard: it keeps no record of this file
            raise

    async def _receive_into(self, conn: Connection, fd: int, request: Store, req: Request) -> tuple[int, bytes]:
        """Write the stream into ``fd``; return its size and SHA-256."""
        hasher = hashlib.sha256()
        size = 0
        stream = receive_stream(conn, uploaded=True)
        async with contextlib.aclosing(stream):
            async for message in stream:
                if type(message) is End:
                    req.receiving = False
                    break
                assert type(message) is Data
                size += len(message.data)
                if request.size is not None and size > request.size:
                    raise BadRequest(f"bad request: more bytes arrived than the {request.size} announced")
                hasher.update(message.data)
                try:
                    _write_all(fd, message.data)
                except OSError as err:
                    raise _storage_error(err) from err
        assert type(message) is End
        digest = hasher.digest()
        if request.size is not None and size != request.size:
            raise BadRequest(f"bad request: {size} bytes arrived, {request.size} were announced")
        _check_digest(digest, request.sha256, message.sha256)
        return size, digest

    async def handle_fetch(self, conn: Connection, request: Fetch, req: Request) -> None:
        req.fields.update(file_id=request.file_id)
        with self._open(request.file_id) as file:
            size = os.fstat(file.fileno()).st_size
            length = check_range(size, request.offset, request.length)
            req.fields.update(size=length)
            if length <= INLINE_MAX:
                data = _read_exactly(file, request.file_id, request.offset, length)
                await conn.send(Sending(size, request.offset, length, data=data))
                return
            await conn.send(Sending(size, request.offset, length))
            await send_stream(conn, _read_frames(file, request.file_id, request.offset, length))

    async def handle_transfer(self, conn: Connection, request: Transfer, req: Request) -> None:
        """Copy a file straight to another node; answer with that node's ``stored``."""
        req.fields.update(file_id=request.file_id, target=f"{request.host}:{request.port}")
        with self._open(request.file_id) as file:
            size = os.fstat(file.fileno()).st_size
            req.fields.update(size=size)
            try:
                peer = await Connection.open(request.host, request.port, role="peer", security=self.security)
                # The target owes us taking the bytes and, once they are all sent, its answer: one that stalls for the
                # request timeout fails the move, not the node. While we send, its silence is not timed.
                peer.timeout = self.limits.request_timeout
            except (ConnectionLost, DfsError) as err:
                raise FileUnavailable(f"file unavailable: the target node cannot be reached ({err})") from None
            try:
                if size <= INLINE_MAX:
                    await peer.send(
                        Store(request.file_id, size, request.sha256, _read_exactly(file, request.file_id, 0, size))
                    )
                    stored = await peer.expect(Stored)
                else:
                    store = Store(request.file_id, size, request.sha256)
                    stored = await send_upload(peer, store, _read_frames(file, request.file_id, 0, size))
            except ConnectionLost as err:
                raise FileUnavailable(f"file unavailable: the target node failed during the copy ({err})") from None
            finally:
                peer.abort()
        await conn.send(stored)

    async def handle_verify(self, conn: Connection, request: Verify, req: Request) -> None:
        """Scrubbing: hash the file as it is on disk now (in a thread: it may be large) and compare."""
        req.fields.update(file_id=request.file_id)
        with self._open(request.file_id) as file:
            digest = await self.disk.run(_sha256_of, file)
        if digest != request.sha256:
            raise ChecksumMismatch(
                f"checksum mismatch: file id {request.file_id} on node {self.node_id} hashes to {digest.hex()}, "
                f"its record says {request.sha256.hex()}"
            )
        await conn.send(Ok())

    def _open(self, file_id: int) -> io.FileIO:
        """The complete file ``file_id``, open for reading; ``FileNotFound`` if this node does not hold it (also when
        its bytes vanished from the disk behind the node's back: then the index forgets it, and the manager marks it
        lost)."""
        path = self.layout.path(file_id)
        try:
            if path is not None:
                return open(path, "rb", buffering=0)
        except FileNotFoundError:
            self.log.error("file_vanished", file_id=file_id, path=str(path))
            self.layout.remove(file_id)
        raise FileNotFound(f"file does not exist: this node holds no file id {file_id}")

    async def handle_remove(self, conn: Connection, request: Remove, req: Request) -> None:
        req.fields.update(file_id=request.file_id, removed=self.layout.remove(request.file_id))
        await conn.send(Ok())


# Flags for a new partial file: it must not exist yet.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _create(partial: Path, data: bytes, final: Path, directories: list[Path]) -> None:
    """(In a disk thread.) Write a small file whole and publish it, in one trip to the thread."""
    fd = os.open(partial, _NEW_FILE, 0o644)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    Disk.publish(fd, partial, final, directories)


def _check_digest(digest: bytes, *expected: bytes | None) -> None:
    for sha256 in expected:
        if sha256 is not None and sha256 != digest:
            raise ChecksumMismatch(
                f"checksum mismatch: the bytes received hash to {digest.hex()}, the sender said {sha256.hex()}"
            )


async def _read_frames(file: BinaryIO, file_id: int, offset: int, length: int) -> AsyncIterator[Data | End]:
    """``length`` bytes of ``file`` from ``offset`` as a stream of data frames."""
    position, end = offset, offset + length
    while position < end:
        chunk = _read_exactly(file, file_id, position, min(CHUNK_SIZE, end - position))
        yield Data(chunk)
        position += len(chunk)
    yield End()


def _read_exactly(file: BinaryIO, file_id: int, offset: int, length: int) -> bytes:
    """``length`` bytes of ``file`` from ``offset`` (at most a chunk: one read)."""
    chunk = os.pread(file.fileno(), length, offset)
    if len(chunk) != length:
        raise InternalError(f"internal error: file id {file_id} shrank while being read")
    return chunk


def _sha256_of(file: io.FileIO) -> bytes:
    return hashlib.file_digest(file, "sha256").digest()


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _storage_error(err: OSError) -> DfsError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            "storage full: the storage node's disk filled up; nothing was kept. Try again: new files now go to nodes "
            "with room (or free space / add a node)"
        )
    return InternalError(f"internal error: the storage node could not write: {err.strerror}")


def _advertised_host(host: str, conn: Connection) -> str:
    """The host the manager should dial: ours if specific, else the local address our manager connection uses."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    sockname = conn.local_address()
    return sockname or "127.0.0.1"

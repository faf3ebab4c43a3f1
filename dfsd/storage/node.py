"""A storage node: keeps whole files on its own disk and does what the manager asks.

The node serves data connections on its own port: the manager's (``store``, ``fetch``, ``remove``, ``transfer``) and
other nodes' (``store``, when the manager has one node copy a file to another). It keeps one control session open to
each manager it is given (``--manager A,B,C``: several managers in front of one database, each of which may ask it for
anything): it registers there (id, the address it serves on, disk size and free bytes), sends the ids of every file
it holds (the manager reconciles them with its records), and heartbeats; the manager answers each beat. A manager
considers the node up exactly while its session lives; the node considers a session dead when its manager stops
answering. Either way the node dials that manager again, forever; each manager's session has its own loop, backoff and
probing, so one manager down changes nothing for the others. The node is ``registered`` while at least one session is.

How soon: a node that loses a session it had registered dials again at once, then probes every PROBE_INTERVAL for
REJOIN_PROBING seconds, because the likeliest cause is a manager restarting, which is back within seconds and whose
first requests need nodes (it waits a few seconds for them, ``REJOIN_WAIT``). Only a manager that stays away past that
gets exponential backoff with jitter, up to BACKOFF_MAX, as does one that was never reached.

Every file a node takes, inline or streamed, from the manager or from another node, goes through one ``DurableWrite``
(disk.py): written in its slot (a stream to a partial entry, renamed into place; a small file at its final name),
hashed as it arrives, fsynced, and its directory fsynced; only then does the node answer ``stored``. Any failure on
the way removes what was written.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import io
import os
import random
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import structlog

from .. import metrics
from ..protocol import (
    CHUNK_SIZE,
    INVENTORY_PAGE,
    ChecksumMismatch,
    DfsError,
    FileNotFound,
    FileUnavailable,
    InternalError,
    check_inline,
    check_range,
    check_sha256,
)
from ..protocol.messages import (
    Build,
    Data,
    End,
    Fetch,
    Heartbeat,
    Inventory,
    ListHeld,
    Message,
    Ok,
    PartInfo,
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
from ..transfer import Frames, receive_file, send_file
from ..wire import OPEN, Connection, ConnectionLost
from .disk import Disk, DurableWrite
from .layout import Layout

log = structlog.get_logger("dfsd.storage")

# Chunks of a large file read per trip to a disk thread when sending it: 4 MiB, as ``bulk.BATCH_BYTES`` (a trip's
# wake-ups cost more than reading one chunk from the page cache).
READ_BATCH = 4

# Reconnection to the manager: first retry after ~0.1 s, doubling up to 5 s, each delay jittered by ±50 % so that many
# nodes restarted together do not knock on the manager in step.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

# After losing a registered session: a connection attempt every 0.2 s (±50 %) for 30 s. A refused connection costs the
# manager's host next to nothing, and 30 s covers a restart, even of a manager with a large database to open.
PROBE_INTERVAL = 0.2
REJOIN_PROBING = 30.0


class StorageNode:
    def __init__(
        self,
        node_id: int,
        data_dir: Path,
        managers: list[tuple[str, int]],
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
        self.managers = managers
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
        self.registered = asyncio.Event()  # with at least one manager
        self._registered_with: set[tuple[str, int]] = set()
        self._manager_links: set[Connection] = set()  # data connections the managers have open to us

    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None:
        held = self.layout.load()
        self.log.info("loaded", data=str(self.layout.root), files=len(held), bytes=sum(f.size for f in held))
        if self.layout.foreign:
            self.log.warning(
                "foreign_entries",
                count=len(self.layout.foreign),
                paths=[str(path) for path in self.layout.foreign[:20]],
                hint="not dfsd's: never served, counted or deleted; move them out of the data directory",
            )
        if self.layout.overfull:
            self.log.warning(
                "directories_overfull",
                paths=[str(path) for path in self.layout.overfull[:20]],
                hint="foreign entries make these hold more than 36 entries; move them out of the data directory",
            )
        from_manager = {
            Store: self.handle_store,
            Fetch: self.handle_fetch,
            Remove: self.handle_remove,
            Transfer: self.handle_transfer,
            Verify: self.handle_verify,
            Build: self.handle_build,
            ListHeld: self.handle_list_held,
        }
        from_peer = {Store: self.handle_store, Fetch: self.handle_fetch}
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
        registrations = [asyncio.create_task(self._stay_registered(manager)) for manager in self.managers]
        try:
            await self._stopping.wait()
        finally:
            # Leave the managers first (closing a control session marks the node down at once, so no new work
            # arrives), then let transfers in flight finish.
            for registration in registrations:
                registration.cancel()
            await asyncio.gather(*registrations, return_exceptions=True)
            self.log.info("deregistered", grace_s=self.grace)
            await listener.shutdown(self.grace)
            self.disk.close()
        self.log.info("stopped")

    def stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, Ctrl-C): ``run`` returns once it is done."""
        self._stopping.set()

    # --- control sessions with the managers ---------------------------------------------------------------------------

    async def _stay_registered(self, manager: tuple[str, int]) -> None:
        """Keep a control session with ``manager``, dialling again whenever it ends."""
        delay = BACKOFF_FIRST
        probing_until = 0.0  # while monotonic time is below this, probe instead of backing off
        where = f"{manager[0]}:{manager[1]}"
        while True:
            probing = time.monotonic() < probing_until
            try:
                conn = await Connection.open(
                    *manager, role="node", security=self.security, timeout=self.manager_timeout
                )
            except (ConnectionLost, DfsError) as err:
                if not probing:
                    self.log.warning("manager_unreachable", manager=where, error=str(err), retry_in=round(delay, 2))
            else:
                try:
                    await self._session(conn, manager)
                except (ConnectionLost, DfsError) as err:
                    self.log.warning("session_lost", manager=where, error=str(err), probing_s=REJOIN_PROBING)
                finally:
                    conn.abort()
                if self._left(manager):  # a registered session was lost: the manager is likely restarting
                    delay, probing_until = BACKOFF_FIRST, time.monotonic() + REJOIN_PROBING
                    continue  # at once
            if probing:
                await asyncio.sleep(PROBE_INTERVAL * random.uniform(0.5, 1.5))
                continue
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_MAX)

    def _left(self, manager: tuple[str, int]) -> bool:
        """The session with ``manager`` ended; whether it had registered. The managers' data connections are dropped
        once no session is left (they cannot be told apart by manager; any live manager may be using one)."""
        registered = manager in self._registered_with
        self._registered_with.discard(manager)
        if not self._registered_with:
            self.registered.clear()
            self._drop_manager_links()
        return registered

    async def _session(self, conn: Connection, manager: tuple[str, int]) -> None:
        conn.timeout = self.manager_timeout  # registering, too, must not wait forever on a silent manager
        capacity, free = self._disk()
        host, port = self.advertise or (None, None)
        host = host or _advertised_host(self.host, conn)
        port = port or self.port
        await conn.send(Register(self.node_id, host, port, capacity, free, len(self.layout.foreign)))
        held = self.layout.file_ids()
        for start in range(0, max(len(held), 1), INVENTORY_PAGE):
            page = held[start : start + INVENTORY_PAGE]
            await conn.send(Inventory(page, more=start + INVENTORY_PAGE < len(held)))
        await conn.expect(Ok)
        self._registered_with.add(manager)
        self.registered.set()
        self.log.info("registered", manager=f"{manager[0]}:{manager[1]}", address=f"{host}:{port}")
        heard = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(self.heartbeat_interval):
                    await conn.expect(Ok)  # the conversation refuses anything but an ok to a heartbeat sent
            except TimeoutError:
                if time.monotonic() - heard > self.manager_timeout:
                    raise ConnectionLost(f"the manager has not answered for {self.manager_timeout:g} s") from None
                capacity, free = self._disk()
                await conn.send(Heartbeat(free, capacity))
                continue
            heard = time.monotonic()

    def _disk(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.layout.root)
        return usage.total, usage.free

    # --- data connections from the manager ----------------------------------------------------------------------------

    async def _serve_manager(
        self, conn: Connection, handlers: Mapping[type[Message], Handler], listener: Listener
    ) -> None:
        """A manager's requests, untimed: it may rightly be slow within one (it relays for a client, and waits for
        it; the manager's own timers bound that client). Its liveness is the control session: when the last one ends,
        so do these connections (``_drop_manager_links``), as a manager drops its connections to us when it ends."""
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
        body = receive_file(conn, request)
        async with DurableWrite(self.disk, self.layout, request.file_id, request.size, request.sha256) as file:
            if body.frames is None:
                assert body.data is not None
                size, digest = await file.write_whole(body.data)
            else:
                await file.create()  # before the uploader is told to go ahead: a full disk refuses it now
                size, digest = await file.publish(await _write_stream(file, body.frames))
            req.fields.update(size=size)
            if conn.closed or conn.peer_closed:  # nobody is left to hear "stored": keeping it would leave an orphan
                raise InternalError(f"internal error: file id {request.file_id} was abandoned before it was committed")
            await conn.send(Stored(size, digest))  # if the sender is gone already, it keeps no record: nor do we

    async def handle_fetch(self, conn: Connection, request: Fetch, req: Request) -> None:
        req.fields.update(file_id=request.file_id)
        with self._open(request.file_id) as file:
            size = os.fstat(file.fileno()).st_size
            length = check_range(size, request.offset, request.length)
            req.fields.update(size=length)
            async with contextlib.aclosing(
                _read_frames(self.disk, file, request.file_id, request.offset, length)
            ) as frames:
                await send_file(conn, Sending(size, request.offset, length), frames)

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
                store = Store(request.file_id, size, request.sha256)
                async with contextlib.aclosing(_read_frames(self.disk, file, request.file_id, 0, size)) as frames:
                    stored = await send_file(peer, store, _while_asked(conn, frames))
            except ConnectionLost as err:
                raise FileUnavailable(f"file unavailable: the target node failed during the copy ({err})") from None
            finally:
                peer.abort()
        await conn.send(stored)

    async def handle_build(self, conn: Connection, request: Build, req: Request) -> None:
        """Write a new file from parts, in order: those held here read from this disk, the others fetched from the
        nodes that hold them (a ``fetch`` on a peer connection), a chunk at a time, through one ``DurableWrite``."""
        size = sum(part.size for part in request.parts)
        req.fields.update(file_id=request.file_id, parts=len(request.parts), size=size)
        async with DurableWrite(self.disk, self.layout, request.file_id, size) as file:
            await file.create()
            for part in request.parts:
                if part.host is None or part.port is None:
                    await self._copy_local(part, file)
                else:
                    await self._copy_remote(part, file)
            stored = Stored(*await file.publish())
            if conn.closed or conn.peer_closed:  # as in handle_store: nobody would record it
                raise InternalError(f"internal error: file id {request.file_id} was abandoned before it was committed")
            await conn.send(stored)

    async def _copy_local(self, part: PartInfo, file: DurableWrite) -> None:
        with self._open(part.file_id) as source:
            if os.fstat(source.fileno()).st_size != part.size:
                raise FileNotFound(f"file does not exist: file id {part.file_id} here is not of {part.size} bytes")
            async with contextlib.aclosing(_read_frames(self.disk, source, part.file_id, 0, part.size)) as frames:
                async for message in frames:
                    if type(message) is Data:
                        await file.write(message.data)

    async def _copy_remote(self, part: PartInfo, file: DurableWrite) -> None:
        assert part.host is not None and part.port is not None
        try:
            peer = await Connection.open(part.host, part.port, role="peer", security=self.security)
            peer.timeout = self.limits.request_timeout
        except (ConnectionLost, DfsError) as err:
            raise FileUnavailable(
                f"file unavailable: the node holding file id {part.file_id} cannot be reached ({err})"
            ) from None
        try:
            await peer.send(Fetch(part.file_id))
            sending = await peer.expect(Sending)
            if sending.size != part.size:
                raise FileNotFound(f"file does not exist: file id {part.file_id} there is not of {part.size} bytes")
            body = receive_file(peer, sending)
            if body.data is not None:
                await file.write(body.data)
            else:
                assert body.frames is not None
                await _write_stream(file, body.frames)
        except ConnectionLost as err:
            raise FileUnavailable(f"file unavailable: the node holding file id {part.file_id} failed ({err})") from None
        finally:
            peer.abort()

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
        path = self.layout.location(file_id)
        try:
            if path is not None:
                return io.FileIO(path, "r")
        except FileNotFoundError:
            self.log.error("file_vanished", file_id=file_id, path=path)
            self.layout.remove(file_id)
        raise FileNotFound(f"file does not exist: this node holds no file id {file_id}")

    async def handle_list_held(self, conn: Connection, request: ListHeld, req: Request) -> None:
        """A page of what this node holds now, for a coordinator taking over (it did not hear the registration)."""
        held = self.layout.file_ids()
        start = 0 if request.after is None else bisect.bisect_right(held, request.after)
        page = held[start : start + INVENTORY_PAGE]
        req.fields.update(after=request.after, count=len(page))
        await conn.send(Inventory(page, more=start + INVENTORY_PAGE < len(held)))

    async def handle_remove(self, conn: Connection, request: Remove, req: Request) -> None:
        file_ids = [request.file_id, *(request.also or ())]
        removed = sum(self.layout.remove(file_id) for file_id in file_ids)
        req.fields.update(file_id=request.file_id, count=len(file_ids), removed=removed)
        await conn.send(Ok())


async def _write_stream(file: DurableWrite, frames: Frames) -> bytes | None:
    """Write a stream's data into ``file``; return the digest its end carries, if any."""
    async for message in frames:
        if type(message) is Data:
            await file.write(message.data)
    assert type(message) is End  # a received stream ends with its end frame, or raises
    return message.sha256


async def _while_asked(conn: Connection, frames: Frames) -> AsyncIterator[Data | End]:
    """The frames of a transfer, cut off (at the next chunk, and at the latest before their end) once the manager
    that asked for it has gone (killed, say): the target then keeps nothing, where a finished copy would be an orphan
    that nobody is left to record, or collide with the next coordinator's move of the same file."""
    async for message in frames:
        if conn.closed or conn.peer_closed:
            raise FileUnavailable("file unavailable: the manager that asked for this transfer has gone")
        yield message


async def _read_frames(
    disk: Disk, file: BinaryIO, file_id: int, offset: int, length: int
) -> AsyncGenerator[Data | End, None]:
    """``length`` bytes of ``file`` from ``offset`` as a stream of data frames. A range of one chunk is read at once
    (a small file, most likely in the page cache); a longer one in a disk thread, READ_BATCH chunks a trip, into
    buffers used again (``Disk.read_buffers``): a large file is often not in the cache (a large upload is written
    around it: ``disk.DIRECT_MIN``), and a read that waits for a busy disk must not stop the event loop, whose
    heartbeats keep the node up. The next trip is read while this one's frames are sent (dfs-cat -o of 1 GiB, 5
    pairs at load 1-2: new/old 0.89-1.08, median 1.06; to a pipe 0.92-1.16, median 1.07; the node's peak memory 44.0
    -> 50.5 MiB). Close the frames (``aclosing``) before the file: the trip read ahead is waited for then, so that no
    thread reads a file that was closed."""
    if length <= CHUNK_SIZE:
        yield Data(_read_exactly(file, file_id, offset, length))
        yield End()
        return
    end = offset + length
    trip = asyncio.ensure_future(_read_trip(disk, file, file_id, offset, end))
    try:
        while True:
            chunks = await trip
            offset += sum(len(chunk) for chunk in chunks)
            if offset < end:
                trip = asyncio.ensure_future(_read_trip(disk, file, file_id, offset, end))
            for chunk in chunks:
                yield Data(chunk)
            if offset >= end:
                break
    finally:
        if not trip.done():
            trip.cancel()  # the disk thread's work is waited for all the same (``bulk.finish``)
            await asyncio.wait([trip])
    yield End()


async def _read_trip(disk: Disk, file: BinaryIO, file_id: int, offset: int, end: int) -> list[memoryview]:
    """The next trip's chunks of ``file`` from ``offset`` (up to READ_BATCH, none past ``end``), read in a disk
    thread."""
    batch = min(READ_BATCH * CHUNK_SIZE, end - offset)
    buffers = disk.read_buffers.take(-(-batch // CHUNK_SIZE))
    sizes = await disk.run(_read_chunks, file, file_id, offset, batch, buffers)
    chunks = [memoryview(buffer)[:size] for buffer, size in zip(buffers, sizes, strict=True)]
    disk.read_buffers.give(buffers)
    return chunks


def _read_chunks(file: BinaryIO, file_id: int, offset: int, length: int, buffers: list[bytearray]) -> list[int]:
    """(In a disk thread.) ``length`` bytes of ``file`` from ``offset`` into ``buffers`` (of CHUNK_SIZE each, as
    many as it takes); how many bytes each holds."""
    end = offset + length
    with contextlib.suppress(OSError):  # only advice: have the disk read the next batch while this one is sent
        os.posix_fadvise(file.fileno(), end, READ_BATCH * CHUNK_SIZE, os.POSIX_FADV_WILLNEED)
    sizes = []
    for start, buffer in zip(range(offset, end, CHUNK_SIZE), buffers, strict=True):
        size = min(CHUNK_SIZE, end - start)
        if os.preadv(file.fileno(), [memoryview(buffer)[:size]], start) != size:
            raise InternalError(f"internal error: file id {file_id} shrank while being read")
        sizes.append(size)
    return sizes


def _read_exactly(file: BinaryIO, file_id: int, offset: int, length: int) -> bytes:
    """``length`` bytes of ``file`` from ``offset`` (at most a chunk: one read)."""
    chunk = os.pread(file.fileno(), length, offset)
    if len(chunk) != length:
        raise InternalError(f"internal error: file id {file_id} shrank while being read")
    return chunk


def _sha256_of(file: io.FileIO) -> bytes:
    return hashlib.file_digest(file, "sha256").digest()


def _advertised_host(host: str, conn: Connection) -> str:
    """The host the manager should dial: ours if specific, else the local address our manager connection uses."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    sockname = conn.local_address()
    return sockname or "127.0.0.1"

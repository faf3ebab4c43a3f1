"""File operations: put, get, delete, stat and list, and the relays that carry the bytes of puts and gets.

File bytes pass through the manager, never resting there but in the bounded read cache of small files
(``read_cache.py``): an upload is relayed frame by frame from the client's connection to a pooled
data connection to the chosen node, and a download the other way, each hop awaiting the next one's write buffer, so
memory stays flat whatever the file size; what arrived inline goes on inline, a stream as a stream (``transfer.py``).
A failure on the client's side of a relay is told apart from the node's by its type (a connection the manager dialed
fails with ``ServerLost`` or ``ServerProtocolError``): the client's own error
goes back as it was, a node's becomes "servers unavailable" (put) or "file unavailable" (get).

An upload's name is reserved (``inflight.py``) before any byte moves and committed only after the node has answered
``stored`` (the bytes are fsynced there); every failure on the way releases the name. A delete is answered once the
name is gone from the metadata; its bytes leave the node afterwards (``removals.py``). A download that finds its node
without the file's bytes asks the same owner whether a move took them elsewhere (follow it), a delete removed the file
(error 2), or the file is lost (marked so; error 4). A small file's bytes may come from the read cache instead
(``read_cache.py``): only after the name was looked up as for any read, and only while its node is up and it is not
marked lost, so a read answers what it would have from the node.

Where a small put's time goes (1 KiB, 16 clients, a manager and one node on a 2-core machine, from the put's and the
store's request lines and each process's CPU, load average 6-7): a put took 8.5 ms (median), 5.3 ms of them relayed to
the node, whose store took 3.1 (as long as one of dfs-bench's durable creates from 16 threads), and 2.8 ms committing,
of which the COMMIT itself 0.55 ms (4.5 puts a transaction). CPU per put (medians of 32 runs at load average 3 to 9):
the manager 194 µs in user mode and 79 in the kernel, the node 148 and 174, the client about 85: 0.68 ms in all, so two
cores take at most some 2,900 puts a second, and each hop waits its turn on them long before. Of the time the manager
holds the GIL, 29 % goes into its two sends on loopback TCP (``Connection._flush``: the system call wakes the receiving
process); the node's one send takes 17 % of its own. (Measured and not kept, as upper bounds, all unsafe, against the
same run's durable creates, A/B alternated: committing the row while the node stores instead of after (a crash between
the two would leave a name without bytes) gave 1.02-1.38 times the puts a second, median 1.10 (4 pairs); no commit at
all, 1.28-1.51 times, median 1.42, the manager's CPU per put 0.57-0.68 of before, and still at best 0.44 of the durable
creates. Nor would the node's disk: with no directory fsync at all, 0.93-1.60 times, median 1.19, and with neither that
nor the commit, 0.91-1.75, median 1.36, no more than without the commit alone (4 pairs each, load average 5 to 9). Not
even a database and a disk that cost nothing would bring puts to 0.6 of the durable creates; fewer hops and less CPU per
hop must.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable

from ..protocol import (
    MAX_COMPOSE_PARTS,
    MAX_LIST_PAGE,
    MAX_LISTING_BYTES,
    PARTS_PREFIX,
    BadRequest,
    FileNotFound,
    FileUnavailable,
    InternalError,
    NameExists,
    NoSuchUpload,
    ServersUnavailable,
    StorageFull,
    check_inline,
    check_meta,
    check_name,
    check_range,
    check_sha256,
    is_part_name,
    meta_bytes,
    upload_of_part,
)
from ..protocol.messages import (
    Build,
    Compose,
    Data,
    Delete,
    End,
    Fetch,
    FileInfo,
    Get,
    Info,
    List,
    Listing,
    Ok,
    PartInfo,
    Put,
    Sending,
    Stat,
    Store,
    Stored,
)
from ..service import Request
from ..settings import Limits
from ..transfer import Frames, receive_file, send_file
from ..wire import Connection, ServerLost, ServerProtocolError
from .coordination import Coordination
from .inflight import InFlight
from .nodes import Rejoining
from .placement import choose_node
from .pool import NodeConnections, remove_copy
from .read_cache import ReadCache
from .removals import Removals
from .store import FileRecord, MetadataStore
from .topology import NodeState, Topology

# A put naming the size and SHA-256 of an upload of the same name still under way (typically its own first attempt,
# whose answer was lost, still committing) waits this long for that upload to end before it is answered.
SETTLE_WAIT = 10.0


class FileOperations:
    def __init__(
        self,
        store: MetadataStore,
        topology: Topology,
        pool: NodeConnections,
        in_flight: InFlight,
        rejoining: Rejoining,
        limits: Limits,
        coordination: Coordination,
        removals: Removals,
        read_cache: ReadCache,
    ) -> None:
        self.read_cache = read_cache  # small files' bytes by file id, served while their node is up
        self.coordination = coordination  # whether other managers place files too
        self.removals = removals  # the bytes of deleted files, removed from their nodes after the answer
        self.store = store
        self.topology = topology
        self.pool = pool
        self.in_flight = in_flight
        self.rejoining = rejoining
        self.limits = limits

    async def handle_put(self, conn: Connection, request: Put, req: Request) -> None:
        check_name(request.name, self.limits.max_name_bytes)
        check_sha256(request.sha256)
        check_meta(request.meta)
        check_inline(request.data, request.size)
        size = len(request.data) if request.data is not None else request.size
        self._check_size(size or 0)
        req.fields.update(name=request.name)
        part = is_part_name(request.name)
        if part:
            await self._check_part_upload(request.name)
        if request.replace and await self._answered_already(conn, request, req, size):
            return
        relaying = False
        try:
            await self.rejoining.wait()
            counts = None if self.coordination.alone else await self.store.files_per_node()
            node = choose_node(self.topology.nodes.values(), request.size, counts)
            meta = dict(request.meta or {})  # with what the stream's end adds
            async with self.in_flight.upload(request.name, node, replace=bool(request.replace)) as file_id:
                req.fields.update(node=node.id, file_id=file_id)
                relaying = True
                try:
                    store = Store(file_id, request.size, request.sha256)
                    stored = await self._relay_upload(conn, request, store, node, meta)
                except StorageFull:
                    self.topology.filled(node)
                    raise
                try:
                    replaced = await self._commit(file_id, request.name, node.id, stored, request.replace, meta)
                except ServersUnavailable:
                    self.in_flight.doubt(node.id, file_id)  # its bytes go once the database says it has no row
                    raise
                except NameExists:  # a file of the name was committed through another manager meanwhile
                    await remove_copy(self.pool, node, file_id)
                    raise
                self.topology.stored(node.id, stored.size)
        except (NameExists, ServersUnavailable):
            # The name is taken, or no node is up: this may be a retry whose first attempt was stored though its
            # answer was lost. Asked only now, so a put of a free name costs no lookup of it beforehand.
            if relaying or not await self._answered_already(conn, request, req, size):
                raise
            return
        if request.data is not None and not part:  # committed: these are the bytes of file_id for good
            self.read_cache.add(file_id, request.data)
        req.fields.update(size=stored.size)
        if replaced is not None:
            req.fields.update(replaced=replaced.id)
            await self._remove_bytes(replaced)
        if part:  # an abort that listed its parts before this one was committed: nobody else would remove it
            await self._check_part_upload(request.name, file_id)
        await conn.send(stored)

    async def _check_part_upload(self, name: str, stored: int | None = None) -> None:
        """A put of a part (``is_part_name``) is taken only for an upload that takes parts; NoSuchUpload otherwise,
        and then the file ``stored`` for it already, if any, is removed."""
        upload = await self.store.find_upload(upload_of_part(name))
        if upload is not None and upload.takes_parts(time.time()):
            return
        if stored is not None:
            await self.remove_files([(name, stored)])
        raise NoSuchUpload(
            f"no such multipart upload: {upload_of_part(name)!r} (of the part {name!r}) was never created, or it was "
            f"completed, aborted or expired, or is being completed; names under {PARTS_PREFIX!r} hold multipart parts"
        )

    def _check_visible(self, name: str) -> None:
        """Only multipart requests create, join and delete the parts of uploads (``PARTS_PREFIX``)."""
        if is_part_name(name):
            raise BadRequest(
                f"bad request: {name!r} is a part of a multipart upload; names under {PARTS_PREFIX!r} are the "
                "uploads' own: complete or abort the upload instead"
            )

    async def _commit(
        self, file_id: int, name: str, node: int, stored: Stored, replace: bool | None, meta: dict[str, str] | None
    ) -> FileRecord | None:
        """Record the stored file; with ``replace``, in place of the file its name held, which is returned."""
        commit = self.store.commit_replacing if replace else self.store.commit
        return await commit(file_id, name, node, stored.size, stored.sha256, time.time(), meta or None)

    async def _remove_bytes(self, record: FileRecord) -> None:
        """The row of ``record`` is gone (deleted or replaced): remove its bytes from its node (if the node is down,
        reconciliation removes them when it registers again)."""
        self.read_cache.discard(record.id)
        self.topology.removed(record.node, record.size)
        node = self.topology.nodes.get(record.node)
        if node is not None:
            await remove_copy(self.pool, node, record.id)

    async def _answered_already(self, conn: Connection, request: Put, req: Request, size: int | None) -> bool:
        """Answer ``stored`` (marked ``already``) if the put names its size and SHA-256 and its name holds exactly
        these bytes and this metadata: the answer to a retry whose first attempt was stored though its answer was
        lost. An upload of the name under way is given SETTLE_WAIT to end first, since it may be that first attempt,
        committing right now."""
        if request.sha256 is None or size is None:
            return False
        await self.in_flight.settle(request.name, SETTLE_WAIT)
        record = await self.store.find(request.name)
        if record is None or record.lost is not None or (record.size, record.sha256) != (size, request.sha256):
            return False
        if (record.meta or None) != (request.meta or None):
            return False
        req.fields.update(size=size, already=True)
        await conn.send(Stored(record.size, record.sha256, already=True))
        return True

    async def _relay_upload(
        self, conn: Connection, request: Put, store: Store, node: NodeState, meta: dict[str, str]
    ) -> Stored:
        """Send the file of ``request`` on to ``node`` as ``store``, adding the metadata its stream's ``end`` carries
        to ``meta``. The client is told to go ahead (``ok``) only when the node has said ok to ``store``: when the
        node's side first asks for the client's stream."""

        async def from_client(frames: Frames) -> AsyncIterator[Data | End]:
            received = 0
            async for message in frames:
                if type(message) is Data:
                    received += len(message.data)
                    self._check_size(received)
                elif message.meta:  # checked before the node has the end: a refusal keeps nothing
                    check_meta({**meta, **message.meta})
                    meta.update(message.meta)
                yield message

        body = receive_file(conn, request).through(from_client)
        try:
            async with self.pool.connection(node.address) as node_conn:
                return await send_file(node_conn, store, body)
        except (ServerLost, ServerProtocolError) as err:
            raise ServersUnavailable(
                f"servers unavailable: storage node {node.id} failed during the upload ({err}); nothing was kept, "
                "try again"
            ) from err

    def _check_size(self, size: int) -> None:
        limit = self.limits.max_file_size
        if limit is not None and size > limit:
            raise BadRequest(f"bad request: files may hold at most {limit} bytes on this cluster")

    async def handle_compose(self, conn: Connection, request: Compose, req: Request) -> None:
        """Join stored files into one on a single node (``build``), commit it like a put, then delete the parts."""
        check_name(request.name, self.limits.max_name_bytes)
        check_meta(request.meta)
        if not 0 < len(request.parts) <= MAX_COMPOSE_PARTS:
            raise BadRequest(f"bad request: a compose joins 1 to {MAX_COMPOSE_PARTS} parts, not {len(request.parts)}")
        for name in (request.name, *request.parts):
            self._check_visible(name)
        req.fields.update(name=request.name, parts=len(request.parts))
        records = [await self._find(name) for name in request.parts]
        stored = await self.compose(request.name, records, bool(request.replace), request.meta, req)
        await self.remove_files((record.name, record.id) for record in records)
        await conn.send(stored)

    async def compose(
        self, name: str, records: list[FileRecord], replace: bool, meta: dict[str, str] | None, req: Request
    ) -> Stored:
        """Store under ``name`` the files ``records`` joined in order, built by one node, and commit it like a put
        (the parts stay: ``remove_files`` them once the caller's own records allow)."""
        for record in records:
            self._node_of(record)
            if record.lost is not None:
                raise FileUnavailable(f"file unavailable: the part {record.name!r} is lost")
        size = sum(record.size for record in records)
        self._check_size(size)
        node = choose_node(self.topology.nodes.values(), size)
        async with self.in_flight.upload(name, node, replace=replace) as file_id:
            req.fields.update(node=node.id, file_id=file_id, size=size)
            with self.in_flight.compose(record.id for record in records):
                parts = [self._part_for(record, node) for record in records]
                stored = await self._build(node, Build(file_id, parts))
            if stored.size != size:
                raise InternalError(f"internal error: node {node.id} built {stored.size} bytes of {size}")
            replaced = await self._commit(file_id, name, node.id, stored, replace, meta)
            self.topology.stored(node.id, stored.size)
        if replaced is not None:
            await self._remove_bytes(replaced)
        return stored

    async def remove_files(self, files: Iterable[tuple[str, int]]) -> None:
        """Delete the files (name, file id) and their bytes; a name that holds another file by now (replaced, or
        deleted and stored again) or none is left alone."""
        for name, file_id in files:
            removed = await self.store.remove_exact(name, file_id)
            if removed is not None:
                await self._remove_bytes(removed)

    def _part_for(self, record: FileRecord, target: NodeState) -> PartInfo:
        """Where ``target`` finds the bytes of ``record``: its own disk, or the node holding them."""
        if record.node == target.id:
            return PartInfo(record.id, record.size)
        holder = self._node_of(record)
        return PartInfo(record.id, record.size, holder.host, holder.port)

    async def _build(self, node: NodeState, build: Build) -> Stored:
        try:
            async with self.pool.connection(node.address) as node_conn:
                await node_conn.send(build)
                return await node_conn.expect(Stored)
        except StorageFull:
            self.topology.filled(node)
            raise
        except (ServerLost, ServerProtocolError) as err:
            raise ServersUnavailable(
                f"servers unavailable: storage node {node.id} failed while composing ({err}); nothing was kept, "
                "try again"
            ) from err

    async def handle_get(self, conn: Connection, request: Get, req: Request) -> None:
        req.fields.update(name=request.name)
        record = await self._find(request.name)
        length = check_range(record.size, request.offset, request.length)
        req.fields.update(node=record.node, size=length)
        if await self._send_cached(conn, record, request.offset, length):
            req.fields.update(cached=True)
            return
        while True:
            await self.rejoining.wait(record.node)
            node = self._node_of(record)
            try:
                await self._relay_download(conn, record, request.offset, length, node)
                return
            except FileNotFound as err:
                # Before any byte went out. A move may have just taken the file to another node: follow it.
                current = await self.in_flight.missing(record, node.id)
                if current is None:  # deleted meanwhile, or replaced: then the reader gets the new file
                    current = await self.store.find(record.name, fresh=True)
                    if current is None:
                        raise FileNotFound(f"file does not exist: {record.name!r} (deleted meanwhile)") from err
                    length = check_range(current.size, request.offset, request.length)
                if current.id != record.id or current.node != node.id:
                    record = current
                    continue
                raise FileUnavailable(
                    f"file unavailable: storage node {node.id} no longer has the bytes of {record.name!r} (lost)"
                ) from err
            except (ServerLost, ServerProtocolError) as err:
                raise FileUnavailable(
                    f"file unavailable: storage node {node.id} failed while sending {record.name!r} ({err}); try again"
                ) from err

    async def _send_cached(self, conn: Connection, record: FileRecord, offset: int, length: int) -> bool:
        """Answer from the read cache if it holds the file and the file may be served now: its node is up (a down
        node's files answer error 4, cached or not) and it is not marked lost. False, having sent nothing, if not."""
        if not self.read_cache.holds(record.size) or record.lost is not None or not self.topology.is_up(record.node):
            return False
        data = self.read_cache.get(record.id)
        if data is None:
            return False
        piece = data[offset : offset + length]
        await conn.send(
            Sending(record.size, offset, length, record.sha256, piece, meta=record.meta, created=record.created)
        )
        return True

    async def _relay_download(
        self, conn: Connection, record: FileRecord, offset: int, length: int, node: NodeState
    ) -> None:
        async with self.pool.connection(node.address) as node_conn:
            await node_conn.send(Fetch(record.id, offset, length))
            sending = await node_conn.expect(Sending)
            if sending.length != length:
                raise ServerProtocolError(
                    f"protocol error: storage node {node.id} answered fetch with the wrong sending"
                )
            body = receive_file(node_conn, sending)
            if body.data is not None and offset == 0 and len(body.data) == record.size:  # the whole file, inline
                self.read_cache.add(record.id, body.data)
            sending = Sending(record.size, offset, length, record.sha256, meta=record.meta, created=record.created)
            await send_file(conn, sending, body)

    async def handle_delete(self, conn: Connection, request: Delete, req: Request) -> None:
        req.fields.update(name=request.name)
        self._check_visible(request.name)
        record = await self.store.remove(request.name)
        if record is None:
            raise FileNotFound(f"file does not exist: {request.name!r}")
        req.fields.update(node=record.node, size=record.size)
        self.read_cache.discard(record.id)
        self.topology.removed(record.node, record.size)
        self.removals.add(record.node, record.id)  # after the answer: the name is gone, the bytes are an orphan now
        await conn.send(Ok())

    async def handle_stat(self, conn: Connection, request: Stat, req: Request) -> None:
        req.fields.update(name=request.name)
        record = await self._find(request.name)
        await conn.send(Info(self._file_info(record)))

    async def handle_list(self, conn: Connection, request: List, req: Request) -> None:
        limit = min(request.limit or MAX_LIST_PAGE, MAX_LIST_PAGE)
        records = await self.store.list_files(request.prefix, request.after, limit + 1)
        page = _fitting(records[:limit])
        req.fields.update(prefix=request.prefix, count=len(page))
        files = [self._file_info(record) for record in page]
        await conn.send(Listing(files, more=len(records) > len(page)))

    async def _find(self, name: str) -> FileRecord:
        record = await self.store.find(name)
        if record is None:
            raise FileNotFound(f"file does not exist: {name!r}")
        return record

    def _node_of(self, record: FileRecord) -> NodeState:
        node = self.topology.nodes.get(record.node)
        if node is None or not node.up:
            raise FileUnavailable(
                f"file unavailable: {record.name!r} is on storage node {record.node}, which is down; "
                "try again when it is back"
            )
        return node

    def _file_info(self, record: FileRecord) -> FileInfo:
        available = self.topology.is_up(record.node) and record.lost is None
        return FileInfo(record.name, record.size, record.sha256, record.node, record.created, available, record.meta)


def _fitting(records: list[FileRecord]) -> list[FileRecord]:
    """The first of ``records`` whose names and metadata fit one listing frame (MAX_LISTING_BYTES); at least one."""
    total = 0
    for count, record in enumerate(records):
        total += len(record.name.encode()) + (meta_bytes(record.meta) if record.meta else 0)
        if total > MAX_LISTING_BYTES and count:
            return records[:count]
    return records

"""The manager: the one place clients talk to.

One port takes both kinds of peer, told apart by the role in their hello: clients (requests, one at a time per
connection) and storage nodes (a control session of register, then heartbeats). File bytes never rest here: an upload
is relayed frame by frame from the client's connection to a pooled data connection to the chosen node, and a download
the other way, each hop awaiting the next one's write buffer, so memory stays flat whatever the file size.

An upload's name is reserved in the metadata store before any byte moves and committed only after the node has
answered ``stored`` (the bytes are fsynced there); every failure on the way releases the name.

A registering node's inventory is reconciled with the records before the node is up (``reconcile.py``); then orphans
are removed from it and, unless switched off, a rebalance starts (``rebalance.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import structlog

from .. import metrics
from ..protocol import (
    INLINE_MAX,
    MAX_LIST_PAGE,
    BadRequest,
    ChecksumMismatch,
    DfsError,
    FileNotFound,
    FileUnavailable,
    ProtocolError,
    ServersUnavailable,
    StorageFull,
    check_inline,
    check_name,
    check_range,
    check_sha256,
)
from ..protocol.messages import (
    ClusterStatus,
    Data,
    Delete,
    Drain,
    End,
    Fetch,
    FileInfo,
    Get,
    Heartbeat,
    Info,
    Inventory,
    List,
    Listing,
    Ok,
    Put,
    Rebalance,
    Register,
    Scrub,
    ScrubReport,
    Sending,
    Stat,
    Status,
    Store,
    Stored,
    Verify,
)
from ..service import Listener, Request, serve_requests
from ..settings import Limits, Security
from ..wire import HANDSHAKE_TIMEOUT, OPEN, Connection, ConnectionLost, receive_stream, send_upload
from .placement import choose_node
from .pool import NodeConnections, remove_copy
from .rebalance import Rebalancer
from .reconcile import reconcile
from .store import FileRecord, Location, MetadataStore, NodeRecord
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.manager")

# A node that has not beaten its heart for this long is down: three missed beats at the default 1 s interval.
NODE_TIMEOUT = 3.0

DEFAULT_LIMITS = Limits()

# On SIGTERM, requests in flight get this long to finish before they are cut off.
GRACE = 10.0

# Records read at a time while scrubbing a node.
SCRUB_PAGE = 1000

# Lost files named in a status answer; the log names every one.
MAX_LOST_SHOWN = 100

Log = structlog.typing.FilteringBoundLogger


class _ClientFault(Exception):
    """Something went wrong on the client's side of a relay (it left, or broke the protocol, or sent too much) while a
    node's connection was in use: carried apart from the node's own errors, then re-raised as it was."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Manager:
    def __init__(
        self,
        db_path: Location,
        host: str = "127.0.0.1",
        port: int = 8000,
        node_timeout: float = NODE_TIMEOUT,
        auto_rebalance: bool = True,
        security: Security = OPEN,
        limits: Limits = DEFAULT_LIMITS,
        grace: float = GRACE,
        metrics_port: int | None = None,
    ) -> None:
        self.db_path = db_path
        self.host = host
        self.port = port
        self.node_timeout = node_timeout
        self.auto_rebalance = auto_rebalance
        self.security = security
        self.limits = limits
        self.topology = Topology()
        self.pool = NodeConnections(security, limits.idle_timeout)
        self.store: MetadataStore
        self.rebalancer: Rebalancer
        self.grace = grace
        self.metrics_port = metrics_port
        self.lost_count = 0  # refreshed whenever files are marked lost or found, for the metrics thread
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, Ctrl-C): ``run`` returns once it is done."""
        self._stopping.set()

    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None:
        self.store = await MetadataStore.open(self.db_path)
        try:
            await self._load_topology()
            self.rebalancer = Rebalancer(self.store, self.topology, self.pool, self.auto_rebalance)
            handlers = {
                Put: self.handle_put,
                Get: self.handle_get,
                Delete: self.handle_delete,
                Stat: self.handle_stat,
                List: self.handle_list,
                Status: self.handle_status,
                Rebalance: self.handle_rebalance,
                Drain: self.handle_drain,
                Scrub: self.handle_scrub,
            }
            listener: Listener
            sessions = {
                "client": lambda conn: serve_requests(conn, handlers, listener),  # type: ignore[arg-type]
                "node": self._node_session,
            }
            listener = Listener(sessions, log, self.security, self.limits)
            self.port = await listener.start(self.host, self.port)
            if self.security.secret is None:
                log.warning(
                    "cluster_open",
                    hint="no shared secret: anyone who can reach this port can read, write and delete files and join "
                    "as a storage node; set --secret-file or DFS_SECRET on every process",
                )
            log.info("listening", host=self.host, port=self.port, db=str(self.db_path))
            if self.metrics_port is not None:
                metrics.watch_cluster(self.topology.snapshot, lambda: self.lost_count)
                await self._refresh_lost()
                log.info("metrics", url=f"http://{self.host}:{metrics.serve(self.host, self.metrics_port)}/metrics")
            if on_ready is not None:
                on_ready(self.host, self.port)
            rebalancing = asyncio.create_task(self.rebalancer.run())
            try:
                await self._stopping.wait()
                log.info("shutting_down", grace_s=self.grace)
                await listener.shutdown(self.grace)
            finally:
                rebalancing.cancel()
                await asyncio.gather(rebalancing, return_exceptions=True)
            log.info("stopped")
        finally:
            self.pool.close()
            await self.store.close()

    async def _load_topology(self) -> None:
        usage = await self.store.usage_by_node()
        for record in await self.store.nodes():
            files, used = usage.get(record.id, (0, 0))
            node = NodeState(record.id, record.host, record.port, record.capacity, record.free, record.last_seen)
            node.files, node.used, node.draining = files, used, record.draining
            self.topology.remember(node)

    # --- storage nodes ------------------------------------------------------------------------------------------------

    async def _node_session(self, conn: Connection) -> None:
        """A node is up exactly while this runs (after its inventory is reconciled)."""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                register = await conn.expect(Register, answer=False)
            node = self.topology.join(register, time.time())
        except (ConnectionLost, DfsError, TimeoutError) as err:
            log.warning("node_refused", peer=conn.peer, error=str(err))
            if isinstance(err, DfsError):
                await conn.refuse(err)
            conn.abort()
            return
        node_log = log.bind(node=node.id)
        cleanup: asyncio.Task[None] | None = None
        try:
            held = await _receive_inventory(conn)
            orphans = await self._reconcile(node, held, node_log)
            await self._save_node(node)
            self.topology.activate(node)
            await conn.send(Ok())
            node_log.info("node_up", address=f"{node.host}:{node.port}", free=node.free, files=node.files)
            cleanup = asyncio.create_task(self._after_join(node, orphans))
            while True:
                async with asyncio.timeout(self.node_timeout):
                    beat = await conn.expect(Heartbeat, answer=False)
                self.topology.heartbeat(node, beat.free, beat.capacity, time.time())
                await conn.send(Ok())
        except TimeoutError:
            node_log.warning("node_down", reason=f"no heartbeat for {self.node_timeout:g} s")
        except (ConnectionLost, DfsError) as err:
            node_log.warning("node_down", reason=str(err))
        finally:
            self.topology.leave(node)
            self.pool.forget(node.address)
            conn.abort()
            if cleanup is not None:
                cleanup.cancel()
                await asyncio.gather(cleanup, return_exceptions=True)
        await self._save_node(node)

    async def _reconcile(self, node: NodeState, held: set[int], node_log: Log) -> list[int]:
        """Compare the node's files with the records; mark lost and found; return the orphans to remove."""
        recorded, recorded_lost, pending = await self.store.ids_on_node(node.id)
        result = reconcile(recorded, recorded_lost, held, pending | self.rebalancer.moving)
        if result.lost:
            await self.store.set_lost(result.lost, time.time())
            node_log.error(
                "files_lost", count=len(result.lost), file_ids=result.lost[:20], hint="see `dfsd status` for names"
            )
        if result.found:
            await self.store.set_lost(result.found, None)
            node_log.warning("files_found", count=len(result.found))
        if result.lost or result.found:
            await self._refresh_lost()
        node.orphans = len(result.orphans)
        node_log.info(
            "reconciled", held=len(held), recorded=len(recorded), lost=len(result.lost), orphans=len(result.orphans)
        )
        return result.orphans

    async def _after_join(self, node: NodeState, orphans: list[int]) -> None:
        # Look again just before removing: an upload or a move may have committed one of them since the snapshot.
        still_orphans = await self.store.unrecorded_on(node.id, orphans)
        orphans = [file_id for file_id in orphans if file_id in still_orphans and file_id not in self.rebalancer.moving]
        for file_id in orphans:
            await remove_copy(self.pool, node, file_id)
        if orphans:
            log.info("orphans_removed", node=node.id, count=len(orphans))
            metrics.ORPHANS.inc(len(orphans))
        self.rebalancer.request(automatic=True)

    async def _save_node(self, node: NodeState) -> None:
        await self.store.save_node(
            NodeRecord(node.id, node.host, node.port, node.capacity, node.free, node.last_seen, node.draining)
        )

    # --- client requests ----------------------------------------------------------------------------------------------

    async def handle_put(self, conn: Connection, request: Put, req: Request) -> None:
        check_name(request.name, self.limits.max_name_bytes)
        check_sha256(request.sha256)
        check_inline(request.data, request.size)
        self._check_size(len(request.data) if request.data is not None else request.size or 0)
        req.fields.update(name=request.name)
        node = choose_node(self.topology.nodes.values(), request.size)
        node.uploading += 1  # before any await, so that concurrent uploads see it
        try:
            file_id = await self.store.reserve(request.name)
            req.fields.update(node=node.id, file_id=file_id)
            try:
                try:
                    store = Store(file_id, request.size, request.sha256, request.data)
                    stored = await self._relay_upload(conn, store, node, req)
                except StorageFull:
                    self.topology.filled(node)
                    raise
                await self.store.commit(file_id, request.name, node.id, stored.size, stored.sha256, time.time())
                self.topology.stored(node.id, stored.size)
            finally:
                self.store.release(request.name)
        finally:
            node.uploading -= 1
        req.fields.update(size=stored.size)
        await conn.send(stored)

    async def _relay_upload(self, conn: Connection, store: Store, node: NodeState, req: Request) -> Stored:
        async def from_client() -> AsyncIterator[Data | End]:
            # The client may start sending once the node has said ok to ``store``.
            await _to_client(conn.send(Ok()))
            req.receiving = True
            try:
                received = 0
                async for message in receive_stream(conn, uploaded=True):
                    if type(message) is End:
                        req.receiving = False
                    else:
                        received += len(message.data)
                        self._check_size(received)
                    yield message
            except (ConnectionLost, DfsError) as err:
                raise _ClientFault(err) from err

        try:
            async with self.pool.connection(node.address) as node_conn:
                if store.data is not None:
                    await node_conn.send(store)
                    return await node_conn.expect(Stored)
                return await send_upload(node_conn, store, from_client())
        except _ClientFault as fault:
            raise fault.error from None
        except (ConnectionLost, ProtocolError) as err:
            raise ServersUnavailable(
                f"servers unavailable: storage node {node.id} failed during the upload ({err}); nothing was kept, "
                "try again"
            ) from err

    def _check_size(self, size: int) -> None:
        limit = self.limits.max_file_size
        if limit is not None and size > limit:
            raise BadRequest(f"bad request: files may hold at most {limit} bytes on this cluster")

    async def handle_get(self, conn: Connection, request: Get, req: Request) -> None:
        req.fields.update(name=request.name)
        record = await self._find(request.name)
        length = check_range(record.size, request.offset, request.length)
        req.fields.update(node=record.node, size=length)
        while True:
            node = self._node_of(record)
            try:
                await self._relay_download(conn, record, request.offset, length, node)
                return
            except _ClientFault as fault:
                raise fault.error from None
            except FileNotFound as err:
                # Before any byte went out. A move may have just taken the file to another node: follow it.
                moved = await self.store.find(record.name)
                if moved is None or moved.id != record.id:
                    raise FileNotFound(f"file does not exist: {record.name!r} (deleted meanwhile)") from err
                if moved.node != record.node:
                    record = moved
                    continue
                log.error("file_lost", name=record.name, file_id=record.id, node=node.id)
                await self.store.set_lost([record.id], time.time())
                await self._refresh_lost()
                raise FileUnavailable(
                    f"file unavailable: storage node {node.id} no longer has the bytes of {record.name!r} (lost)"
                ) from err
            except (ConnectionLost, ProtocolError) as err:
                raise FileUnavailable(
                    f"file unavailable: storage node {node.id} failed while sending {record.name!r} ({err}); try again"
                ) from err

    async def _relay_download(self, conn: Connection, record: FileRecord, offset: int, length: int, node: NodeState):
        async with self.pool.connection(node.address) as node_conn:
            await node_conn.send(Fetch(record.id, offset, length))
            sending = await node_conn.expect(Sending)
            if (sending.data is not None) != (length <= INLINE_MAX) or sending.length != length:
                raise ProtocolError(f"protocol error: storage node {node.id} answered fetch with the wrong sending")
            await _to_client(conn.send(Sending(record.size, offset, length, record.sha256, sending.data)))
            if sending.data is None:
                async for message in receive_stream(node_conn):
                    await _to_client(conn.send(message))

    async def handle_delete(self, conn: Connection, request: Delete, req: Request) -> None:
        req.fields.update(name=request.name)
        record = await self.store.remove(request.name)
        if record is None:
            raise FileNotFound(f"file does not exist: {request.name!r}")
        req.fields.update(node=record.node, size=record.size)
        self.topology.removed(record.node, record.size)
        node = self.topology.nodes.get(record.node)
        if node is not None:
            await remove_copy(self.pool, node, record.id)
        await conn.send(Ok())

    async def handle_stat(self, conn: Connection, request: Stat, req: Request) -> None:
        req.fields.update(name=request.name)
        record = await self._find(request.name)
        await conn.send(Info(self._file_info(record)))

    async def handle_list(self, conn: Connection, request: List, req: Request) -> None:
        limit = min(request.limit or MAX_LIST_PAGE, MAX_LIST_PAGE)
        records = await self.store.list_files(request.prefix, request.after, limit + 1)
        req.fields.update(prefix=request.prefix, count=min(len(records), limit))
        files = [self._file_info(record) for record in records[:limit]]
        await conn.send(Listing(files, more=len(records) > limit))

    async def handle_status(self, conn: Connection, request: Status, req: Request) -> None:
        await conn.send(await self._status())

    async def handle_drain(self, conn: Connection, request: Drain, req: Request) -> None:
        node = self.topology.nodes.get(request.node_id)
        if node is None:
            raise BadRequest(f"bad request: the manager knows no storage node {request.node_id}; see `dfsd status`")
        req.fields.update(node=node.id, undo=request.undo, forget=request.forget)
        if request.forget:
            if node.claimed or node.files:
                raise BadRequest(
                    f"bad request: node {node.id} can be forgotten only once it is empty and stopped "
                    f"(it is {'running' if node.claimed else 'stopped'} with {node.files} files)"
                )
            del self.topology.nodes[node.id]
            await self.store.forget_node(node.id)
            log.info("node_forgotten", node=node.id)
        else:
            node.draining = not request.undo
            await self._save_node(node)
            self.rebalancer.request()
        await conn.send(await self._status())

    async def handle_rebalance(self, conn: Connection, request: Rebalance, req: Request) -> None:
        self.rebalancer.request()
        await conn.send(await self._status())

    async def handle_scrub(self, conn: Connection, request: Scrub, req: Request) -> None:
        nodes = [node for node in self.topology.nodes.values() if node.files]
        reports = await asyncio.gather(*(self._scrub_node(node) for node in nodes))
        report = ScrubReport(
            checked=sum(r.checked for r in reports),
            bytes=sum(r.bytes for r in reports),
            corrupt=sorted(name for r in reports for name in r.corrupt),
            missing=sorted(name for r in reports for name in r.missing),
            skipped=sum(r.skipped for r in reports),
        )
        req.fields.update(checked=report.checked, corrupt=len(report.corrupt), missing=len(report.missing))
        await conn.send(report)

    async def _scrub_node(self, node: NodeState) -> ScrubReport:
        """Verify every file recorded on ``node``, one at a time (the node's disk is the bottleneck anyway)."""
        corrupt: list[str] = []
        missing: list[str] = []
        checked = size = skipped = after = 0
        while records := await self.store.files_on_node(node.id, after, SCRUB_PAGE):
            for record in records:
                after = record.id
                if not node.up or record.lost is not None:
                    skipped += 1
                    continue
                try:
                    async with self.pool.connection(node.address) as node_conn:
                        await node_conn.send(Verify(record.id, record.sha256))
                        await node_conn.expect(Ok)
                except ChecksumMismatch as err:
                    log.error("file_corrupt", name=record.name, file_id=record.id, node=node.id, error=err.message)
                    corrupt.append(record.name)
                except FileNotFound:
                    current = await self.store.find(record.name)
                    if current is None or current.id != record.id or current.node != node.id:
                        continue  # deleted or moved while the scrub ran: not missing
                    log.error("file_lost", name=record.name, file_id=record.id, node=node.id)
                    await self.store.set_lost([record.id], time.time())
                    await self._refresh_lost()
                    missing.append(record.name)
                    continue
                except (DfsError, ConnectionLost) as err:
                    log.warning("scrub_skipped", name=record.name, node=node.id, error=str(err))
                    skipped += 1
                    continue
                checked += 1
                size += record.size
        return ScrubReport(checked, size, corrupt, missing, skipped)

    async def _refresh_lost(self) -> list[str]:
        """Count the lost files (for metrics) and return the first names (for status)."""
        self.lost_count, names = await self.store.lost_files(MAX_LOST_SHOWN)
        return names

    async def _status(self) -> ClusterStatus:
        nodes = sorted(self.topology.nodes.values(), key=lambda node: node.id)
        lost_by_node = await self.store.lost_by_node()
        lost_names = await self._refresh_lost()
        return ClusterStatus(
            [node.info(lost_by_node.get(node.id, 0)) for node in nodes],
            files=sum(node.files for node in nodes),
            bytes=sum(node.used for node in nodes),
            lost=lost_names,
            rebalance=self.rebalancer.info(),
        )

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
        return FileInfo(record.name, record.size, record.sha256, record.node, record.created, available)


async def _receive_inventory(conn: Connection) -> set[int]:
    held: set[int] = set()
    while True:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):  # per page: a large inventory may take a while in all
            page = await conn.expect(Inventory, answer=False)
        held.update(page.file_ids)
        if not page.more:
            return held


async def _to_client(sending: object) -> None:
    """Await a send to the client, telling its failure apart from a node's."""
    try:
        await sending  # type: ignore[misc]
    except ConnectionLost as err:
        raise _ClientFault(err) from err

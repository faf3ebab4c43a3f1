"""The manager: the one place clients talk to. This module is its lifecycle: start, listen, shut down.

One port takes both kinds of peer, told apart by the role in their hello: clients (requests, one at a time per
connection) and storage nodes (a control session of register, then heartbeats). Each job has its own module:

- ``nodes.py``: node sessions (register, inventory and reconciliation, heartbeats, orphan removal after a join);
- ``files.py``: file operations (put, get, delete, stat, list, compose) and the relays that carry their bytes;
- ``admin.py``: status, scrub, drain and rebalance requests;
- ``buckets.py``: bucket records (create, delete, look up, list), for the gateways;
- ``multipart.py``: multipart uploads (create, parts, list, complete, abort, expire), for the gateways;
- ``rebalance.py``: the rebalancer, one task owned here, which moves files between nodes;
- ``removals.py``: the bytes of deleted files, removed from their nodes after the delete is answered, one task owned
  here;
- ``read_cache.py``: the bytes of small files read or written lately, by file id, served without the hop to their
  node;
- ``coordination.py``: this manager's record among those sharing the database, and whether it coordinates (runs the
  jobs that must run once: rebalancing, reconciliation, orphan removal), one task owned here.

They share the state that outlives a request: who is where (``topology.py``, which alone changes it), the uploads and
moves in flight (``inflight.py``), the lost files (``lost.py``), the data connections (``pool.py``) and the metadata
store.

Start-up loads the known nodes from the metadata store (down until they register), then listens; shutdown stops
accepting, gives requests in flight ``grace`` seconds, stops the rebalancer, the coordination task and the removals,
and closes the store last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from .. import metrics
from ..protocol.messages import (
    AbortUpload,
    CompleteUpload,
    Compose,
    CreateBucket,
    CreateUpload,
    Delete,
    DeleteBucket,
    Drain,
    ExpireUploads,
    Get,
    List,
    ListBuckets,
    ListParts,
    ListUploads,
    Put,
    PutPart,
    Rebalance,
    Scrub,
    Stat,
    StatBucket,
    StatUpload,
    Status,
)
from ..service import Listener, serve_requests
from ..settings import Limits, Security
from ..wire import OPEN
from .admin import Admin
from .buckets import BucketOperations
from .coordination import Coordination
from .files import FileOperations
from .inflight import InFlight
from .lost import LostFiles
from .multipart import MultipartOperations
from .nodes import NodeSessions, Rejoining
from .pool import NodeConnections
from .read_cache import DEFAULT_CAPACITY, ReadCache
from .rebalance import Rebalancer
from .removals import Removals
from .store import Location, MetadataStore
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.manager")

# A node that has not beaten its heart for this long is down: three missed beats at the default 1 s interval.
NODE_TIMEOUT = 3.0

DEFAULT_LIMITS = Limits()

# On SIGTERM, requests in flight get this long to finish before they are cut off.
GRACE = 10.0


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
        read_cache: int = DEFAULT_CAPACITY,
    ) -> None:
        self.db_path = db_path
        self.host = host
        self.port = port
        self.node_timeout = node_timeout
        self.auto_rebalance = auto_rebalance
        self.security = security
        self.limits = limits
        self.topology = Topology()
        self.pool = NodeConnections(security)
        self.store: MetadataStore
        self.rebalancer: Rebalancer
        self.grace = grace
        self.metrics_port = metrics_port
        self.read_cache = ReadCache(read_cache)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Begin a clean shutdown (SIGTERM, Ctrl-C): ``run`` returns once it is done."""
        self._stopping.set()

    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None:
        self.store = await MetadataStore.open(self.db_path)
        try:
            await self._load_topology()
            lost = LostFiles(self.store)
            in_flight = InFlight(self.store, self.topology, lost)
            self.rebalancer = Rebalancer(
                self.store,
                self.topology,
                self.pool,
                in_flight,
                self.auto_rebalance,
                lambda: coordination.coordinating,
                lambda: coordination.taken_over(),
            )
            coordination = Coordination(
                self.store,
                self.topology,
                in_flight,
                self.pool,
                self.db_path,
                self.rebalancer,
                lambda: nodes.reconcile_live(),
            )
            rejoining = Rejoining(self.topology)
            removals = Removals(self.pool, self.topology)
            files = FileOperations(
                self.store,
                self.topology,
                self.pool,
                in_flight,
                rejoining,
                self.limits,
                coordination,
                removals,
                self.read_cache,
            )
            buckets = BucketOperations(self.store)
            multipart = MultipartOperations(self.store, files, self.limits)
            admin = Admin(self.store, self.topology, self.pool, in_flight, lost, coordination)
            nodes = NodeSessions(
                self.store,
                self.topology,
                self.pool,
                self.rebalancer,
                in_flight,
                lost,
                rejoining,
                self.node_timeout,
                coordination,
            )
            handlers = {
                Put: files.handle_put,
                Get: files.handle_get,
                Delete: files.handle_delete,
                Stat: files.handle_stat,
                List: files.handle_list,
                Compose: files.handle_compose,
                Status: admin.handle_status,
                Rebalance: admin.handle_rebalance,
                Drain: admin.handle_drain,
                Scrub: admin.handle_scrub,
                CreateBucket: buckets.handle_create_bucket,
                DeleteBucket: buckets.handle_delete_bucket,
                StatBucket: buckets.handle_stat_bucket,
                ListBuckets: buckets.handle_list_buckets,
                CreateUpload: multipart.handle_create_upload,
                StatUpload: multipart.handle_stat_upload,
                PutPart: multipart.handle_put_part,
                ListParts: multipart.handle_list_parts,
                ListUploads: multipart.handle_list_uploads,
                CompleteUpload: multipart.handle_complete_upload,
                AbortUpload: multipart.handle_abort_upload,
                ExpireUploads: multipart.handle_expire_uploads,
            }
            listener: Listener
            sessions = {
                "client": lambda conn: serve_requests(conn, handlers, listener),  # type: ignore[arg-type]
                "node": nodes.node_session,
            }
            listener = Listener(sessions, log, self.security, self.limits)
            self.port = await listener.start(self.host, self.port)
            if self.security.secret is None:
                log.warning(
                    "cluster_open",
                    hint="no shared secret: anyone who can reach this port can read, write and delete files and join "
                    "as a storage node; set --secret-file or DFS_SECRET on every process",
                )
            log.info(
                "listening", host=self.host, port=self.port, db=str(self.db_path), read_cache=self.read_cache.capacity
            )
            if self.metrics_port is not None:
                metrics.watch_cluster(self.topology.snapshot, lambda: lost.count)
                metrics.watch_read_cache(self.read_cache)
                if self.store.name_cache is not None:
                    metrics.watch_name_cache(self.store.name_cache)
                await lost.refresh()
                log.info("metrics", url=f"http://{self.host}:{metrics.serve(self.host, self.metrics_port)}/metrics")
            if on_ready is not None:
                on_ready(self.host, self.port)
            tasks = [
                asyncio.create_task(self.rebalancer.run()),
                asyncio.create_task(coordination.run(f"{self.host}:{self.port}")),
                asyncio.create_task(removals.run()),
            ]
            try:
                await self._stopping.wait()
                log.info("shutting_down", grace_s=self.grace)
                await listener.shutdown(self.grace)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            log.info("stopped")
        finally:
            self.pool.close()
            await self.store.close()

    async def _load_topology(self) -> None:
        usage = await self.store.usage_by_node()
        for record in await self.store.nodes():
            files, used = usage.get(record.id, (0, 0))
            self.topology.remember(
                NodeState(
                    record.id,
                    record.host,
                    record.port,
                    record.capacity,
                    record.free,
                    record.last_seen,
                    files=files,
                    used=used,
                    draining=record.draining,
                )
            )

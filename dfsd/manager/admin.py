"""Admin requests: status, scrub, drain and rebalance, the operator's view of the cluster and levers on it.

``status`` is built from the topology (who is up, how full), the metadata store (which files are lost) and the
managers' records (``coordination.py``). ``drain``, ``rebalance`` and ``forget`` change what the rebalancer aims at
and then ask it to run, on whichever manager coordinates; they answer with a status at once, without waiting for the
moves. ``scrub`` asks every node to re-read and hash every file recorded on it, one file
at a time per node and all nodes at once, since each node's disk is the bottleneck; a file a node no longer has is
marked lost, unless a delete or a move changed its row while the scrub ran.
"""

from __future__ import annotations

import asyncio

import structlog

from ..protocol import BadRequest, ChecksumMismatch, DfsError, FileNotFound
from ..protocol.messages import (
    ClusterStatus,
    Drain,
    Ok,
    Rebalance,
    Scrub,
    ScrubReport,
    Status,
    Verify,
)
from ..service import Request
from ..wire import Connection, ConnectionLost
from .coordination import Coordination
from .inflight import InFlight
from .lost import LostFiles
from .pool import NodeConnections
from .store import MetadataStore
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.manager")

# Records read at a time while scrubbing a node.
SCRUB_PAGE = 1000


class Admin:
    def __init__(
        self,
        store: MetadataStore,
        topology: Topology,
        pool: NodeConnections,
        in_flight: InFlight,
        lost: LostFiles,
        coordination: Coordination,
    ) -> None:
        self.coordination = coordination
        self.store = store
        self.topology = topology
        self.pool = pool
        self.in_flight = in_flight
        self.lost = lost

    async def handle_status(self, conn: Connection, request: Status, req: Request) -> None:
        await conn.send(await self._status())

    async def handle_drain(self, conn: Connection, request: Drain, req: Request) -> None:
        node = self.topology.nodes.get(request.node_id)
        if node is None:
            raise BadRequest(f"bad request: the manager knows no storage node {request.node_id}; see `dfsd status`")
        req.fields.update(node=node.id, undo=request.undo, forget=request.forget)
        if request.forget:
            self.topology.forget(node)
            await self.store.forget_node(node.id)
            log.info("node_forgotten", node=node.id)
        else:
            self.topology.drain(node, not request.undo)
            await self.store.set_draining(node.id, not request.undo)
            await self.coordination.rebalance()
        await conn.send(await self._status())

    async def handle_rebalance(self, conn: Connection, request: Rebalance, req: Request) -> None:
        await self.coordination.rebalance()
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
                    current = await self.in_flight.missing(record, node.id)
                    if current is not None and current.node == node.id:  # lost, and marked so; not deleted or moved
                        missing.append(record.name)
                    continue
                except (DfsError, ConnectionLost) as err:
                    log.warning("scrub_skipped", name=record.name, node=node.id, error=str(err))
                    skipped += 1
                    continue
                checked += 1
                size += record.size
        return ScrubReport(checked, size, corrupt, missing, skipped)

    async def _status(self) -> ClusterStatus:
        nodes = sorted(self.topology.nodes.values(), key=lambda node: node.id)
        lost_by_node = await self.store.lost_by_node()
        lost_names = await self.lost.refresh()
        managers, rebalance = await self.coordination.status()
        return ClusterStatus(
            [node.info(lost_by_node.get(node.id, 0)) for node in nodes],
            files=sum(node.files for node in nodes),
            bytes=sum(node.used for node in nodes),
            lost=lost_names,
            rebalance=rebalance,
            managers=managers,
        )

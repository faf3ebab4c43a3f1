"""Node sessions: a storage node's control session, from ``register`` to its last heartbeat.

Theory of operation: a node dials the manager and registers; its id is claimed at once, so a second node with the same
id is refused. It then sends its inventory, page by page, which is reconciled with the records (``reconcile.py``)
before the node is up: files it lacks are marked lost, files it holds again are found, and what it holds that no
record names are orphans. Only then is the node answered ``ok`` and up; it stays up exactly while heartbeats keep
arriving within the deadline, and goes down when the session ends for any reason (``finally``), every pooled data
connection to it aborted with it.

Uploads and moves in flight are not orphans: both the reconciliation and the orphan removal after the join, a task
owned by the session, ask ``inflight.py`` which ids are (the removal looks again just before, since an upload or a
move may have committed one of them meanwhile). Then the session asks for a rebalance.

With several managers the node keeps a session with each (each judges its liveness for itself), and only the
coordinator reconciles its inventory and removes orphans (``coordination.py``); the others just take it up. A manager
that becomes the coordinator later asks every node up there for what it holds then (``reconcile_live``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import structlog

from ..protocol import DfsError, ServersUnavailable
from ..protocol.messages import Heartbeat, Inventory, Ok, Register
from ..wire import HANDSHAKE_TIMEOUT, Connection, ConnectionLost
from .coordination import Coordination
from .inflight import InFlight
from .lost import LostFiles
from .pool import NodeConnections, held_by
from .rebalance import Rebalancer
from .reconcile import reconcile
from .store import MetadataStore, NodeRecord
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.manager")

Log = structlog.typing.FilteringBoundLogger

# For this long after it starts, a manager that knows storage nodes from its records gives them time to reconnect
# before it answers that none is up (error 1 to a put, error 4 to a get): a node that lost its session probes for the
# manager every fraction of a second (``dfsd/storage/node.py``), so one that is coming back is up well within it.
REJOIN_WAIT = 5.0


class Rejoining:
    """The nodes known from the records, coming back after the manager (re)started: requests that need a node wait
    for them until REJOIN_WAIT after the start, so that a restart of the manager does not fail the first requests."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._recorded = set(topology.nodes)  # the nodes known from the records at start-up
        self._deadline = time.monotonic() + REJOIN_WAIT
        self._joined = asyncio.Condition()  # notified whenever a node comes up

    async def joined(self) -> None:
        """A node has just come up."""
        async with self._joined:
            self._joined.notify_all()

    async def wait(self, node_id: int | None = None) -> None:
        """Until node ``node_id`` (or any node) is up, if it is one that is expected back and there is time left."""

        def ready() -> bool:
            if node_id is None:
                return any(node.up for node in self._topology.nodes.values())
            node = self._topology.nodes.get(node_id)
            return node is None or node.up

        remaining = self._deadline - time.monotonic()
        expected = self._recorded if node_id is None else self._recorded & {node_id}
        if remaining <= 0 or not expected or ready():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining), self._joined:
                await self._joined.wait_for(ready)


class NodeSessions:
    def __init__(
        self,
        store: MetadataStore,
        topology: Topology,
        pool: NodeConnections,
        rebalancer: Rebalancer,
        in_flight: InFlight,
        lost: LostFiles,
        rejoining: Rejoining,
        node_timeout: float,
        coordination: Coordination,
    ) -> None:
        self.coordination = coordination
        self.store = store
        self.topology = topology
        self.pool = pool
        self.rebalancer = rebalancer
        self.in_flight = in_flight
        self.lost = lost
        self.rejoining = rejoining
        self.node_timeout = node_timeout

    async def node_session(self, conn: Connection) -> None:
        """A node is up exactly while this runs (after its inventory is reconciled)."""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                register = await conn.expect(Register)
            node = self.topology.join(register, time.time())
        except (ConnectionLost, DfsError, TimeoutError) as err:
            log.warning("node_refused", peer=conn.peer, error=str(err))
            if isinstance(err, DfsError):
                await conn.refuse(err)
            conn.abort()
            return
        node_log = log.bind(node=node.id)
        if node.foreign:
            node_log.warning("foreign_entries", count=node.foreign, hint="see the node's log for their paths")
        cleanup: asyncio.Task[None] | None = None
        try:
            held = await _receive_inventory(conn)
            orphans = await self._reconcile(node, held, node_log)
            await save_node(self.store, node)
            self.topology.activate(node)
            await self.rejoining.joined()
            await conn.send(Ok())
            node_log.info("node_up", address=f"{node.host}:{node.port}", free=node.free, files=node.files)
            if self.coordination.coordinating:
                cleanup = asyncio.create_task(self._after_join(node, orphans))
            while True:
                async with asyncio.timeout(self.node_timeout):
                    beat = await conn.expect(Heartbeat)
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
        try:
            await save_node(self.store, node)
        except ServersUnavailable as err:  # the database is down: its record keeps the last state saved
            node_log.warning("node_not_saved", error=err.message)

    async def _reconcile(self, node: NodeState, held: set[int], node_log: Log) -> list[int]:
        """Compare the node's files with the records; mark lost and found; return the orphans to remove. Only the
        coordinator does: the node registers with every manager, and one reconciliation is enough (a manager that
        becomes the coordinator later reconciles the nodes up then, ``reconcile_live``)."""
        await self.coordination.decided()
        if not self.coordination.coordinating:
            node_log.info("reconciliation_left_to_coordinator", held=len(held))
            return []
        return await self._reconciled(node, held, node_log)

    async def _reconciled(self, node: NodeState, inventory: set[int] | None, node_log: Log) -> list[int]:
        """Reconcile ``node`` given its ``inventory`` from its registration, or (None) by asking it now.

        Lost means recorded before the node was asked and not held when it answered: the bytes of a file are durable
        before its row is written. An inventory sent at registration came before the records were read, so a file
        committed in between (through another manager) seems lost; the node is asked again then, for those alone
        to be settled. Orphans need no such care: ``still_orphans`` looks again before any is removed.
        """
        recorded, recorded_lost, in_flight = await self.in_flight.on_node(node.id)
        held = inventory if inventory is not None else await held_by(self.pool, node)
        result = reconcile(recorded, recorded_lost, held, in_flight)
        if result.lost and inventory is not None and self.store.shared:
            held_now = await held_by(self.pool, node)
            result = dataclasses.replace(result, lost=[file_id for file_id in result.lost if file_id not in held_now])
        await self.lost.mark(node.id, lost=result.lost, found=result.found)
        self.topology.found_orphans(node, len(result.orphans))
        node_log.info(
            "reconciled", held=len(held), recorded=len(recorded), lost=len(result.lost), orphans=len(result.orphans)
        )
        return result.orphans

    async def reconcile_live(self) -> None:
        """This manager has just become the coordinator: reconcile every node up here now, whose registrations it
        heard while another manager coordinated. Orphans are removed (the copies of moves the old coordinator left
        unfinished among them) and lost files marked. A node that cannot be asked is reconciled when it registers
        again; a database that fails ends this manager's turn as coordinator, and the next turn starts over."""
        for node in [node for node in self.topology.nodes.values() if node.up]:
            node_log = log.bind(node=node.id)
            try:
                orphans = await self._reconciled(node, None, node_log)
            except (ConnectionLost, DfsError) as err:
                if isinstance(err, ServersUnavailable):
                    raise
                node_log.warning("reconciliation_failed", error=str(err))
                continue
            await self._remove_orphans(node, orphans)

    async def _after_join(self, node: NodeState, orphans: list[int]) -> None:
        await self._remove_orphans(node, orphans)
        self.rebalancer.request(automatic=True)

    async def _remove_orphans(self, node: NodeState, orphans: list[int]) -> None:
        await self.in_flight.remove_orphans(self.pool, node, orphans)


async def save_node(store: MetadataStore, node: NodeState) -> None:
    """Persist what the manager must remember of a node across its own restarts."""
    await store.save_node(
        NodeRecord(node.id, node.host, node.port, node.capacity, node.free, node.last_seen, node.draining)
    )


async def _receive_inventory(conn: Connection) -> set[int]:
    held: set[int] = set()
    while True:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):  # per page: a large inventory may take a while in all
            page = await conn.expect(Inventory)
        held.update(page.file_ids)
        if not page.more:
            return held

"""Rebalancing: moving files from the fullest nodes to the emptiest until no two up nodes differ by more than one file.

Theory of operation: each round plans up to ROUND moves from the current counts (``placement.plan_moves``), so uploads,
deletes and nodes coming and going between rounds are taken into account, and runs them PARALLEL at a time, leaving
the rest of the manager's capacity to clients. One move:

1. the manager asks the source node to ``transfer`` the file to the target node; the source streams it there directly
   (the bytes never pass through the manager) and the target checks the SHA-256 the manager recorded before it fsyncs
   and answers ``stored``;
2. the manager switches the file's row from source to target in one statement (only if the row still names the
   source: a delete or another move meanwhile wins);
3. only then does the manager ask the source to delete its copy.

At every instant the row names a node that holds the whole file, so every file stays readable. While a move is under
way its file is in flight (``inflight.py``), so the copy on the target is not taken for an orphan. A crash at any step
leaves at worst a second copy that no row names: an orphan, removed when that node next registers, or (several
managers) by the next coordinator, which reconciles every node when it takes over. A source node whose manager dies
mid-transfer cuts the copy off before its end, so the target keeps nothing that nobody is left to record.

With several managers on one database only the coordinator rebalances; one that stops coordinating finishes the round's
moves under way and plans no more. Step 2 is fenced by the coordinator's lock (``store_postgres.py``): a manager that
lost it cannot switch a row, so its copies stay orphans for the new coordinator, which knows nothing of its moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from .. import metrics
from ..protocol import ChecksumMismatch, DfsError, FileUnavailable, ServersUnavailable
from ..protocol.messages import RebalanceInfo, Stored, Transfer
from ..wire import ConnectionLost
from .inflight import InFlight
from .placement import plan_moves
from .pool import NodeConnections, remove_copy
from .store import FileRecord, MetadataStore
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.rebalance")

# Moves planned per round: small enough that a round reacts to new uploads and failures, large enough to keep moving.
ROUND = 64

# Moves at once: enough to overlap one move's round trips with another's bytes, few enough to leave clients room.
PARALLEL = 2

# A round whose every move failed is planned again once, after this pause, before the rebalancer gives up: the cause
# may pass (an old coordinator's copy still being cut off on a target, a node that left and comes back), and a drain
# given up waits for the next request.
STALLED_RETRY = 2.0


class Rebalancer:
    def __init__(
        self,
        store: MetadataStore,
        topology: Topology,
        pool: NodeConnections,
        in_flight: InFlight,
        auto: bool,
        coordinating: Callable[[], bool],
        taken_over: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.topology = topology
        self.pool = pool
        self.in_flight = in_flight  # holds the moves under way: their copies are not orphans on their targets
        self.auto = auto
        self.coordinating = coordinating  # only the coordinator moves files (``coordination.py``)
        self.taken_over = taken_over  # and only once it has reconciled the nodes, when it has just taken over
        self.moved = 0
        self.failed = 0
        self.remaining = 0
        self.running = False
        self._wanted = asyncio.Event()

    def info(self) -> RebalanceInfo:
        return RebalanceInfo(self.running, self.moved, self.failed, self.remaining, self.auto)

    def request(self, automatic: bool = False) -> None:
        """Ask for a rebalance (a node joined, or an operator asked); ignored if automatic ones are off."""
        if self.auto or not automatic:
            self._wanted.set()

    async def run(self) -> None:
        """Wait for requests and rebalance, forever (the manager owns this task)."""
        while True:
            await self._wanted.wait()
            await self.taken_over()  # a request waits for this manager's turn as the coordinator, if it is not yet
            self._wanted.clear()
            if not self.coordinating():
                continue  # the coordinator rebalances; this manager asks it again when it becomes the coordinator
            self.running = True
            try:
                await self._rebalance()
            except Exception:
                log.exception("rebalance_failed")  # the next request tries again; the manager goes on
            finally:
                self.running = False
                self.remaining = 0

    async def _rebalance(self) -> None:
        stalled = False  # the last round's every move failed
        while self.coordinating():
            moves = await self.plan_round()
            if not moves:
                files = {node.id: node.files for node in self.topology.nodes.values() if node.up}
                log.info("balanced", files=files, moved=self.moved, failed=self.failed)
                return
            self.remaining = len(moves)
            failed_before = self.failed
            records = await self._choose_files(moves)
            limit = asyncio.Semaphore(PARALLEL)
            async with asyncio.TaskGroup() as moves_in_flight:
                for record, target in records:
                    moves_in_flight.create_task(self._limited_move(limit, record, target))
            if self.failed - failed_before < len(records):
                stalled = False
            elif stalled:
                log.warning("rebalance_stalled", reason="every move of two rounds failed", failed=self.failed)
                return
            else:
                stalled = True
                await asyncio.sleep(STALLED_RETRY)

    async def plan_round(self) -> list[tuple[int, int]]:
        """The next round's moves (source id, target id) among the nodes up. With managers sharing the database they
        are planned on its counts, not this manager's estimate: the estimate misses what the others changed since the
        last tick (a completion that deleted parts, uploads), and a recount racing a move's commit can take the move
        off twice, so a round planned on it could judge uneven nodes balanced, or a draining node empty."""
        if self.store.shared:
            self.topology.recount(await self.store.usage_by_node())
        up = [node for node in self.topology.nodes.values() if node.up]
        return plan_moves(
            {node.id: node.files for node in up}, ROUND, frozenset(node.id for node in up if node.draining)
        )

    async def _limited_move(self, limit: asyncio.Semaphore, record: FileRecord, target: int) -> None:
        async with limit:
            if self.coordinating():  # no new move once another manager coordinates
                await self._move(record, target)
            self.remaining -= 1

    async def _choose_files(self, moves: list[tuple[int, int]]) -> list[tuple[FileRecord, int]]:
        """Pick which files make the planned moves: (record on the source, target id)."""
        targets: dict[int, list[int]] = {}
        for source, target in moves:
            targets.setdefault(source, []).append(target)
        chosen: list[tuple[FileRecord, int]] = []
        for source, source_targets in targets.items():
            records = await self.store.movable(source, len(source_targets), self.in_flight.unmovable())
            chosen.extend(zip(records, source_targets, strict=False))
        return chosen

    async def _move(self, record: FileRecord, target_id: int) -> None:
        source, target = self.topology.nodes[record.node], self.topology.nodes[target_id]
        if not (source.up and target.up) or target.free < record.size:
            self.failed += 1
            return
        copied = relocated = in_doubt = refused = False
        with self.in_flight.move(record.id):
            try:
                async with self.pool.connection(source.address) as conn:
                    await conn.send(Transfer(record.id, target.host, target.port, record.sha256))
                    stored = await conn.expect(Stored)
                copied = True
                if (stored.size, stored.sha256) != (record.size, record.sha256):
                    raise ChecksumMismatch(f"checksum mismatch: the copy of file id {record.id} differs")
                if not target.up:  # it left during the copy: keep the file where it is (its copy becomes an orphan)
                    raise FileUnavailable(f"file unavailable: node {target.id} went down during the move")
                if not self.coordinating():  # another manager reconciles nodes now, blind to this move: give it up
                    raise FileUnavailable("file unavailable: this manager stopped coordinating during the move")
                try:
                    relocated = await self.store.relocate(record.id, source.id, target.id)
                except ServersUnavailable:
                    in_doubt = True  # switched or not, nobody can tell now: the next coordinator reconciles both
                    raise
                if not relocated:  # deleted or moved meanwhile, or a part being composed: the new copy is an orphan
                    await self._remove_copy(target, record.id)
                    return
                self.topology.moved(source.id, target.id, record.size)
                self.moved += 1
                metrics.MOVES.labels("moved").inc()
                await self._remove_copy(source, record.id)
            except (DfsError, ConnectionLost) as err:
                self.failed += 1
                metrics.MOVES.labels("failed").inc()
                log.warning("move_failed", file_id=record.id, source=source.id, target=target.id, error=str(err))
                # A node's error answer means the target kept nothing of this copy; what it holds of that id then
                # (an orphan, or a copy another coordinator is making) is not this move's to remove.
                ours = copied or isinstance(err, ConnectionLost)
                if ours and not (relocated or in_doubt):
                    await self._remove_copy(target, record.id)
                refused = not ours
        if refused:  # the target may hold that id already: an orphan (say, a copy a dead coordinator finished late)
            await self.in_flight.remove_orphans(self.pool, target, [record.id])

    async def _remove_copy(self, node: NodeState, file_id: int) -> None:
        await remove_copy(self.pool, node, file_id)

"""Several managers on one database: this manager's record and lease, and whether it is the one that coordinates.

Theory of operation: every TICK, each manager renews its row in the database's ``managers`` table (``last_seen`` by the
database's clock); a manager not renewed within LEASE is *down* in ``status``, and the reservations of uploads it held
are dropped, so an upload that died with its manager leaves no name behind.

Exactly one manager *coordinates*: it alone runs the jobs that must run once, rebalancing (and draining, which is
rebalancing away from a node) and reconciling a registering node's inventory (marking lost files, removing orphans).
It is the one holding a PostgreSQL advisory lock on a connection of its own. We chose the lock over a lease row
because PostgreSQL frees it the moment that connection ends: a coordinator killed (kill -9) or whose host dies frees
it as soon as the server sees the connection close, and the others try to take it every TICK, so one of them
coordinates within about a TICK; a coordinator cut off from the database is dropped by the server's TCP keepalives
(a few seconds, ``store_postgres.py``), and itself stops coordinating as soon as a check of its connection fails. A
lease row would need its expiry waited out even after a clean death, and clocks to agree. On SQLite the one manager
always coordinates.

A manager that takes over heard the registrations of the nodes up then without reconciling them, and knows nothing of
the moves the old coordinator left unfinished. So before it moves any file it asks each node up what it holds
(``list_held``) and reconciles it (``nodes.py``): lost files are marked, orphans (the copies of those unfinished moves
among them) removed. Then it resumes the rebalancer, even with automatic rebalancing off when a drain or a rebalance
was left unfinished. An old coordinator cannot commit a move after it lost the lock (``store_postgres.py`` switches
rows on the lock's own connection), so what it left behind stays what the reconciliation saw.

The same round tidies what a database outage left behind (reservations, the bytes of uploads whose commit failed), and
refreshes, on a shared database, what other managers may have changed: nodes' file counts (placement and the
rebalancer plan from them) and drains. The coordinator's rebalancer progress goes into its record, so that ``status``
shows it through any manager, and an operator's ``rebalance`` sent to another manager reaches it there. While another
manager is up, placement also counts each node's files from the database at every upload (``files.py``); alone, a
manager saves that query.

A third loop renews the *sole lease* every TICK (``sole_lease.py``): the manager alone on the database holds it, and
answers names from memory rather than asking the database at every read; a manager that starts beside a holder ends
its turn, and writes to ``files`` only once that turn has certainly run out (DURATION, 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from ..protocol import ServersUnavailable
from ..protocol.messages import ManagerInfo, RebalanceInfo
from .inflight import InFlight
from .pool import NodeConnections
from .rebalance import Rebalancer
from .store import Location, ManagerRecord, MetadataStore, Progress
from .topology import Topology

log = structlog.get_logger("dfsd.manager")

# Seconds between renewals of this manager's record and attempts to become the coordinator.
TICK = 0.5

# A manager whose record has not been renewed for this long is down, and its uploads' reservations are dropped:
# several missed ticks, so a busy event loop or a slow commit does not make a live manager look dead.
LEASE = 5.0


class Coordination:
    def __init__(
        self,
        store: MetadataStore,
        topology: Topology,
        in_flight: InFlight,
        pool: NodeConnections,
        database: Location,
        rebalancer: Rebalancer,
        reconcile_live: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._in_flight = in_flight
        self._pool = pool
        self._topology = topology
        self._database = str(database)
        self._rebalancer = rebalancer  # runs only while this manager coordinates
        self._reconcile_live = reconcile_live  # reconciles the nodes up here, when this manager takes over
        self._takeover: asyncio.Task[None] | None = None  # that, and resuming the rebalancer, after a takeover
        self._record: ManagerRecord | None = None
        self.coordinating = not store.shared  # on SQLite from the start; on PostgreSQL once the lock is taken
        self._taken_over = asyncio.Event()  # set while this manager coordinates and has done the takeover's jobs
        if self.coordinating:
            self._taken_over.set()  # SQLite: it heard every registration itself
        self.alone = True  # no other manager is up: placement may trust this manager's own counts
        self._decided = asyncio.Event()  # set once the first tick has tried to take the lock
        self._role_changed = asyncio.Event()  # the lock was taken or lost: the record says so now, not a tick later
        self._unreachable = False  # the database failed the last tick (logged once per outage)
        store.fence_files()  # this store serves a manager: its writes to files wait for the sole lease's rights

    async def run(self, address: str) -> None:
        """Hold or seek the coordinator's lock, and renew this manager's record, every TICK, forever (the manager
        owns this task). Two loops: a record that the database is slow to take must not delay learning that the
        lock is lost, since an old coordinator that goes on acting beside the new one is what the lock prevents."""
        record = self._record = ManagerRecord(self._store.manager_id, address, time.time())
        try:
            async with asyncio.TaskGroup() as loops:
                loops.create_task(self._keep_lock(record))
                loops.create_task(self._keep_record(record))
                if self._store.shared:
                    loops.create_task(self._keep_sole_lease(record))
        finally:
            await self._end_takeover()

    async def decided(self) -> None:
        """Until this manager has first tried to coordinate, so that a node registering at start-up is reconciled by
        the coordinator it will have."""
        await self._decided.wait()

    async def _keep_lock(self, record: ManagerRecord) -> None:
        while True:
            coordinating = await self._store.try_coordinate()  # False also when the database cannot be reached
            if coordinating and not self.coordinating:
                self.coordinating = True
                log.info("coordinating", manager=record.id)
                self._takeover = asyncio.create_task(self._take_over(record))
                self._role_changed.set()
            elif not coordinating:
                self._step_down()
            self._decided.set()
            await asyncio.sleep(TICK)

    async def _keep_sole_lease(self, record: ManagerRecord) -> None:
        """Renew the sole lease every TICK, in a loop of its own: the holder's rights must not wait on the record's
        slower round (its tidying asks the nodes)."""
        while True:
            await self._store.keep_sole_lease(record, LEASE)
            await asyncio.sleep(TICK)

    async def _keep_record(self, record: ManagerRecord) -> None:
        while True:
            try:
                await self._tick(record)
                if self._unreachable:
                    log.warning("database_back")
                self._unreachable = False
            except ServersUnavailable as err:
                if not self._unreachable:
                    log.error("database_unreachable", error=err.message)
                self._unreachable = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._role_changed.wait()
            self._role_changed.clear()

    async def _tick(self, record: ManagerRecord) -> None:
        info = self._rebalancer.info()
        progress = Progress(info.running, info.moved, info.failed, info.remaining)
        if await self._store.renew_manager(record, self.coordinating, progress):
            self._rebalancer.request()
        await self._store.tidy_reservations(LEASE)
        await self._in_flight.resolve_doubts(self._pool)
        if self._store.shared:
            others = [m for m in await self._store.managers(LEASE) or () if m.up and m.id != record.id]
            self.alone = not others
            await self._refresh_nodes()

    def _step_down(self) -> None:
        if self.coordinating:
            log.warning("stopped_coordinating")
            self._role_changed.set()
        self.coordinating = False
        self._taken_over.clear()
        if self._takeover is not None:
            self._takeover.cancel()  # the next turn as coordinator starts over

    async def _take_over(self, record: ManagerRecord) -> None:
        """The coordinator's first jobs: reconcile the nodes whose registrations another coordinator heard (and
        whose unfinished moves it left behind), then resume the rebalancing, and any drain, it may have left half
        done. A database that fails meanwhile makes it start again, for as long as this turn lasts."""
        started = time.monotonic()
        while True:
            try:
                await self._reconcile_live()
                records = await self._store.managers(LEASE) or []
                break
            except ServersUnavailable as err:  # the turn goes on (the lock holds): try again, until it ends
                log.warning("takeover_interrupted", error=err.message, retry_s=TICK)
                await asyncio.sleep(TICK)
        nodes = self._topology.nodes.values()
        log.info("took_over", nodes=sum(node.up for node in nodes), seconds=round(time.monotonic() - started, 3))
        unfinished = any(node.draining for node in nodes) or any(
            r.progress is not None and r.progress.running for r in records if r.id != record.id
        )
        self._taken_over.set()
        self._rebalancer.request(automatic=not unfinished)  # an unfinished drain or rebalance resumes even if not auto

    async def taken_over(self) -> None:
        """Until this manager coordinates and has reconciled the nodes: no file moves before, lest a move find the
        copy an old coordinator left on its target, or a node not yet reconciled."""
        await self._taken_over.wait()

    async def _end_takeover(self) -> None:
        if self._takeover is not None:
            self._takeover.cancel()
            await asyncio.gather(self._takeover, return_exceptions=True)

    async def _refresh_nodes(self) -> None:
        """What other managers changed: file counts (their uploads, deletes, moves) and drains."""
        self._topology.recount(await self._store.usage_by_node())
        drained = False
        for record in await self._store.nodes():
            node = self._topology.nodes.get(record.id)
            if node is not None and node.draining != record.draining:
                self._topology.drain(node, record.draining)
                drained = True
        if drained and self.coordinating:
            self._rebalancer.request()  # a drain asked of another manager: this one moves the files

    async def rebalance(self) -> None:
        """An operator asked for a rebalance: run it here, or have the coordinator run it."""
        if self.coordinating:
            self._rebalancer.request()
        else:
            await self._store.ask_rebalance()

    async def status(self) -> tuple[list[ManagerInfo], RebalanceInfo]:
        """Every manager of the cluster, and the coordinator's rebalancer (as it last renewed its record), for
        ``status``."""
        own = self._rebalancer.info()
        records = await self._store.managers(LEASE)
        if records is None:
            return [ManagerInfo(self._record.address if self._record else "", True, True, self._database)], own
        managers = [ManagerInfo(r.address, r.up, r.coordinator, self._database) for r in records]
        progress = next((r.progress for r in records if r.coordinator and r.id != self._store.manager_id), None)
        if self.coordinating or progress is None:
            return managers, own
        return managers, RebalanceInfo(progress.running, progress.moved, progress.failed, progress.remaining, own.auto)

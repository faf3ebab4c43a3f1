"""What is in flight: uploads under way and files being moved, and the questions whose answers depend on them.

Theory of operation: a file is *in flight* while a node may hold bytes of it that no row names yet: from the moment an
upload reserves its name until the upload is committed or fails, and from the moment the rebalancer starts copying it
to a target until the row is switched there or the copy is given up. Every question that compares what the rows say
with what a node holds asks this owner, so none of them can forget a kind of flight:

- reconciling a registering node: bytes that no row places there are orphans, except the ids in flight (``on_node``);
- removing those orphans, later: only the ones that are orphans still, just before (``still_orphans``);
- a node answering that it lacks a file's bytes, to a read or a scrub: the file is lost only if its row still places
  that very file on that node (``missing``). A delete or a finished move explains the absence instead; a move in
  flight never does, because the source deletes its copy only after the row names the target.

An upload whose commit failed because the database could not be reached is *in doubt*: its row may or may not have
been written. Its bytes stay on the node until the database answers again and ``resolve_doubts`` finds the row
missing; only then are they removed (an orphan otherwise, until that node's next registration).

Uploads are reserved in the metadata store, which keeps names unique between racing uploads (through any manager
sharing the database) and hands out the ids, and counted on their node in the topology, where placement sees them;
moves are held here, since only the coordinator moves files and only it removes orphans (``coordination.py``). So are
the parts a ``compose`` is joining, which the rebalancer then leaves alone (a coordinator elsewhere cannot see them;
for the parts of a multipart upload being completed, the database tells it: ``MetadataStore.relocate``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

import structlog

from .. import metrics
from ..protocol import ServersUnavailable
from .lost import LostFiles
from .pool import NodeConnections, remove_copies
from .store import FileRecord, MetadataStore
from .topology import NodeState, Topology

log = structlog.get_logger("dfsd.manager")


class InFlight:
    def __init__(self, store: MetadataStore, topology: Topology, lost: LostFiles) -> None:
        self._store = store
        self._topology = topology
        self._lost = lost
        self._moving: set[int] = set()  # file ids being copied now: not orphans on their target
        self._composing: collections.Counter[int] = collections.Counter()  # part id -> builds reading it now
        self._settled: dict[str, asyncio.Event] = {}  # name -> set when the upload of that name under way ends
        self._doubtful: dict[int, set[int]] = {}  # node id -> ids of uploads to it whose commit may have failed

    @contextlib.asynccontextmanager
    async def upload(self, name: str, node: NodeState, *, replace: bool = False) -> AsyncIterator[int]:
        """Reserve ``name`` for an upload to ``node`` and give its new file id; ``NameExists`` if the name is taken
        (a ``replace`` upload reserves only the id: it may replace the stored file, and races with other replacements).

        The reservation, and the node's count of uploads under way, last until the block ends: commit inside it.
        """
        self._topology.upload_started(node)  # before any await, so that concurrent uploads see it
        try:
            file_id = await self._store.reserve(name, node.id, replace=replace)
            settled = None if replace else asyncio.Event()
            if settled is not None:
                self._settled[name] = settled
            try:
                yield file_id
            finally:
                try:
                    await self._store.release(name, file_id)
                finally:
                    if settled is not None:
                        del self._settled[name]
                        settled.set()
        finally:
            self._topology.upload_ended(node)

    def doubt(self, node_id: int, file_id: int) -> None:
        """The commit of upload ``file_id`` to ``node_id`` failed on an unreachable database: it may have happened."""
        self._doubtful.setdefault(node_id, set()).add(file_id)

    async def resolve_doubts(self, pool: NodeConnections) -> None:
        """Remove the bytes of the uploads in doubt whose rows the database (reachable again) does not have."""
        doubtful, self._doubtful = self._doubtful, {}
        for node_id, ids in doubtful.items():
            try:
                unrecorded = await self._store.unrecorded_on(node_id, sorted(ids))
            except ServersUnavailable:
                self._doubtful.setdefault(node_id, set()).update(ids)
                continue
            node = self._topology.nodes.get(node_id)
            if node is not None:
                await remove_copies(pool, node, sorted(unrecorded))

    async def settle(self, name: str, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for an upload of ``name`` under way (if any) to be committed or given up."""
        settled = self._settled.get(name)
        if settled is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await settled.wait()

    @contextlib.contextmanager
    def move(self, file_id: int) -> Iterator[None]:
        """The rebalancer copies ``file_id`` to another node: that copy is no orphan until the block ends."""
        self._moving.add(file_id)
        try:
            yield
        finally:
            self._moving.discard(file_id)

    @contextlib.contextmanager
    def compose(self, file_ids: Iterable[int]) -> Iterator[None]:
        """A node is building a file from the parts ``file_ids``: the rebalancer leaves them where they are until the
        block ends (a part moved under the build would be fetched from where it no longer is)."""
        ids = list(file_ids)
        self._composing.update(ids)
        try:
            yield
        finally:
            self._composing.subtract(ids)
            self._composing = +self._composing  # drop the ids no build holds any more

    def unmovable(self) -> set[int]:
        """The ids of the files the rebalancer must not pick now: those being moved, and parts being composed."""
        return self._moving | set(self._composing)

    async def on_node(self, node_id: int) -> tuple[set[int], set[int], set[int]]:
        """What reconciling ``node_id`` needs, in one snapshot: the ids recorded on it, those of them marked lost, and
        every id in flight (uploads and moves, on any node)."""
        recorded, recorded_lost, uploading = await self._store.ids_on_node(node_id)
        return recorded, recorded_lost, uploading | self._moving

    async def still_orphans(self, node_id: int, orphans: list[int]) -> list[int]:
        """Those of ``orphans`` (found on ``node_id`` earlier) that no row places there now and that are not in flight:
        an upload or a move may have committed one since."""
        unrecorded = await self._store.unrecorded_on(node_id, orphans)
        return [file_id for file_id in orphans if file_id in unrecorded and file_id not in self._moving]

    async def remove_orphans(self, pool: NodeConnections, node: NodeState, orphans: list[int]) -> None:
        """Remove from ``node`` those of ``orphans`` that are orphans still (``still_orphans``), if this manager
        still holds the coordinator's lock: a manager that has just lost it would take the new coordinator's moves
        in flight, which it cannot see, for orphans."""
        orphans = await self.still_orphans(node.id, orphans)
        if orphans and not await self._store.holds_lock():
            log.warning("orphans_left_to_coordinator", node=node.id, count=len(orphans))
            return
        await remove_copies(pool, node, orphans)
        if orphans:
            log.info("orphans_removed", node=node.id, count=len(orphans))
            metrics.ORPHANS.inc(len(orphans))

    async def missing(self, record: FileRecord, node_id: int) -> FileRecord | None:
        """Node ``node_id`` answered that it lacks the bytes of ``record``: the file's record as it is now.

        None if the file was deleted meanwhile (its name may name another file by now); on another node if a move
        took it there; on ``node_id`` still if it is lost, in which case it has been marked lost.
        """
        current = await self._store.find(record.name, fresh=True)  # the database itself, before marking it lost
        if current is None or current.id != record.id:
            return None
        if current.node == node_id:
            await self._lost.mark(node_id, lost=[record.id], name=record.name)
        return current

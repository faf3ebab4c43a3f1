"""The bytes of deleted files, removed from their nodes after the delete has been answered.

A delete is done once its name is gone from the metadata: that is what the client is told, and what every later
request sees. The node's copy is removed afterwards, here, so a delete costs the client one commit and no round trip
to a node. A crash at any point in between loses nothing: a copy that no row names is an orphan, which the node's next
registration removes (reconciliation, ``nodes.py``), as it does for a node that was down when the file was deleted.

Theory of operation: ``add`` notes a copy to remove and returns at once; one task, owned by the manager (``run``),
takes everything noted so far and removes it, each node's copies in batches (``pool.remove_copies``: up to
REMOVE_BATCH ids in one ``remove``, one request at a time to a node), then takes what was noted meanwhile, so the
faster deletes come, the larger the batches. A removal that fails (the node is down or fails) leaves orphans, logged
by ``remove_copies``, for reconciliation to remove. (One ``remove`` per copy, four at a time to a node, cost each
delete a request of its own at the manager and at the node: batched, the node's CPU per delete fell to about a third
and the manager's by a quarter; the README has the figures.)
"""

from __future__ import annotations

import asyncio

from .pool import NodeConnections, remove_copies
from .topology import Topology


class Removals:
    def __init__(self, pool: NodeConnections, topology: Topology) -> None:
        self._pool = pool
        self._topology = topology
        self._pending: dict[int, list[int]] = {}  # node id -> ids of the copies to remove from it, in order noted
        self._noted = asyncio.Event()

    def add(self, node_id: int, file_id: int) -> None:
        """Remove the copy of ``file_id`` from node ``node_id`` soon; its row is gone already."""
        self._pending.setdefault(node_id, []).append(file_id)
        self._noted.set()

    async def run(self) -> None:
        """Remove what is noted, until cancelled (what is left then is orphans, for reconciliation)."""
        while True:
            await self._noted.wait()
            self._noted.clear()
            pending, self._pending = self._pending, {}
            await asyncio.gather(*(self._remove_from(node_id, ids) for node_id, ids in pending.items()))

    async def _remove_from(self, node_id: int, file_ids: list[int]) -> None:
        node = self._topology.nodes.get(node_id)
        if node is None:  # forgotten meanwhile: nothing of it is ours to clean any more
            return
        await remove_copies(self._pool, node, file_ids)

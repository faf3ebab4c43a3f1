"""The bytes of deleted files, removed from their nodes after the delete has been answered.

A delete is done once its name is gone from the metadata: that is what the client is told, and what every later
request sees. The node's copy is removed afterwards, here, so a delete costs the client one commit and no round trip
to a node. A crash at any point in between loses nothing: a copy that no row names is an orphan, which the node's next
registration removes (reconciliation, ``nodes.py``), as it does for a node that was down when the file was deleted.

Theory of operation: ``add`` notes a copy to remove and returns at once; one task, owned by the manager (``run``),
takes everything noted so far and removes it, each node's copies by up to WORKERS_PER_NODE pooled connections at once
(one ``remove`` each, as ``pool.remove_copy`` asks), then takes what was noted meanwhile. A removal that fails (the
node is down or fails) leaves an orphan, logged by ``remove_copy``, for reconciliation to remove.
"""

from __future__ import annotations

import asyncio

from .pool import NodeConnections, remove_copy
from .topology import Topology

# Removals sent to one node at once: enough to keep up with deletes answered at the manager's full rate, few enough to
# leave the node's connections and disk to the requests of clients.
WORKERS_PER_NODE = 4


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

        async def work(share: list[int]) -> None:
            for file_id in share:
                await remove_copy(self._pool, node, file_id)

        await asyncio.gather(*(work(file_ids[k::WORKERS_PER_NODE]) for k in range(WORKERS_PER_NODE)))

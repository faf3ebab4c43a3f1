"""Open data connections from the manager to storage nodes, kept and reused so no transfer pays for a TCP set-up.

A connection carries one transfer at a time. It goes back to the pool only when the transfer ended cleanly; after any
failure its state is unknown (a stream may be half sent), so it is aborted instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..wire import Connection

# Idle connections kept per node: enough for the concurrency one manager process drives, few enough to be cheap.
MAX_IDLE_PER_NODE = 32

Address = tuple[str, int]


class NodeConnections:
    def __init__(self) -> None:
        self._idle: dict[Address, list[Connection]] = {}

    @contextlib.asynccontextmanager
    async def connection(self, address: Address) -> AsyncIterator[Connection]:
        """A connection to the node at ``address``; raises ``ConnectionLost`` if it cannot be reached."""
        idle = self._idle.setdefault(address, [])
        conn = idle.pop() if idle else await Connection.open(*address, role="manager")
        try:
            yield conn
        except BaseException:
            conn.abort()
            raise
        if len(idle) < MAX_IDLE_PER_NODE:
            idle.append(conn)
        else:
            conn.abort()

    def forget(self, address: Address) -> None:
        """Drop every idle connection to ``address`` (its node went down or moved)."""
        for conn in self._idle.pop(address, []):
            conn.abort()

    def close(self) -> None:
        for address in list(self._idle):
            self.forget(address)

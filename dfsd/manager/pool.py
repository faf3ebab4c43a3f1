"""Open data connections from the manager to storage nodes, kept and reused so no transfer pays for a TCP set-up.

A connection carries one transfer at a time. It goes back to the pool only when the transfer ended cleanly; after any
failure its state is unknown (a stream may be half sent), so it is aborted instead. When a node goes down, every
connection to it is aborted, those in use included, so transfers in flight fail at once instead of hanging.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog

from ..protocol import DfsError
from ..protocol.messages import Ok, Remove
from ..wire import Connection, ConnectionLost
from .topology import NodeState

log = structlog.get_logger("dfsd.manager")

# Idle connections kept per node: enough for the concurrency one manager process drives, few enough to be cheap.
MAX_IDLE_PER_NODE = 32

Address = tuple[str, int]


class NodeConnections:
    def __init__(self) -> None:
        self._idle: dict[Address, list[Connection]] = {}
        self._busy: dict[Address, set[Connection]] = {}

    @contextlib.asynccontextmanager
    async def connection(self, address: Address) -> AsyncIterator[Connection]:
        """A connection to the node at ``address``; raises ``ConnectionLost`` if it cannot be reached."""
        idle = self._idle.setdefault(address, [])
        conn = idle.pop() if idle else await Connection.open(*address, role="manager")
        busy = self._busy.setdefault(address, set())
        busy.add(conn)
        try:
            yield conn
        except BaseException:
            conn.abort()
            raise
        finally:
            busy.discard(conn)
        if len(idle) < MAX_IDLE_PER_NODE and not conn.closed:
            idle.append(conn)
        else:
            conn.abort()

    def forget(self, address: Address) -> None:
        """Abort every connection to ``address``, idle or in use (its node went down or moved)."""
        for conn in [*self._idle.pop(address, []), *self._busy.get(address, ())]:
            conn.abort()

    def close(self) -> None:
        for address in list(self._idle):
            self.forget(address)


async def remove_copy(pool: NodeConnections, node: NodeState, file_id: int) -> bool:
    """Ask ``node`` to delete its copy of ``file_id``; best effort, because a copy left behind is an orphan that the
    node's next registration removes. Returns whether the node confirmed."""
    if not node.up:
        log.warning("orphan_left", node=node.id, file_id=file_id, error="node is down")
        return False
    try:
        async with pool.connection(node.address) as conn:
            await conn.send(Remove(file_id))
            await conn.expect(Ok)
    except (DfsError, ConnectionLost) as err:
        log.warning("orphan_left", node=node.id, file_id=file_id, error=str(err))
        return False
    return True

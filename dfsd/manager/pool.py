"""Open data connections from the manager to storage nodes, kept and reused so no transfer pays for a TCP set-up.

A connection carries one transfer at a time. It goes back to the pool only when the transfer ended cleanly and its
conversation is idle (a stream abandoned halfway leaves it out of step); after any failure it is aborted instead. When
a node goes down, every connection to it is aborted, those in use included, so transfers in flight fail at once
instead of hanging.

These connections run no timer: a node's liveness is its control session (the heartbeat deadline), and a node may
rightly be silent for as long as a transfer takes (between ``ok`` and ``stored`` while a client sends, while it hashes a
file for ``verify``, while it copies one to another node).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import structlog

from ..protocol import REMOVE_BATCH, DfsError
from ..protocol.messages import Inventory, ListHeld, Ok, Remove
from ..settings import Security
from ..wire import Connection, ConnectionLost, conversation_of
from .topology import NodeState

log = structlog.get_logger("dfsd.manager")

# Idle connections kept per node: enough for the concurrency one manager process drives, few enough to be cheap.
MAX_IDLE_PER_NODE = 32

# A connection idle this long is dropped rather than reused: well inside a node's default idle timeout (300 s), so the
# pool never hands out a connection the node is about to close.
MAX_IDLE_SECONDS = 60.0

Address = tuple[str, int]


class NodeConnections:
    def __init__(self, security: Security) -> None:
        self._security = security
        self._idle: dict[Address, list[tuple[Connection, float]]] = {}
        self._busy: dict[Address, set[Connection]] = {}

    @contextlib.asynccontextmanager
    async def connection(self, address: Address) -> AsyncIterator[Connection]:
        """A connection to the node at ``address``; raises ``ConnectionLost`` if it cannot be reached."""
        idle = self._idle.setdefault(address, [])
        conn = self._reusable(idle) or await Connection.open(*address, role="manager", security=self._security)
        busy = self._busy.setdefault(address, set())
        busy.add(conn)
        try:
            yield conn
        except BaseException:
            conn.abort()
            raise
        finally:
            busy.discard(conn)
        if len(idle) < MAX_IDLE_PER_NODE and not conn.closed and conversation_of(conn).idle:
            idle.append((conn, time.monotonic()))
        else:
            conn.abort()

    @staticmethod
    def _reusable(idle: list[tuple[Connection, float]]) -> Connection | None:
        """The most recently used idle connection the node has not closed and will not close soon."""
        while idle:
            conn, since = idle.pop()
            if not conn.closed and not conn.peer_closed and time.monotonic() - since < MAX_IDLE_SECONDS:
                return conn
            conn.abort()
        return None

    def forget(self, address: Address) -> None:
        """Abort every connection to ``address``, idle or in use (its node went down or moved)."""
        for conn, _since in self._idle.pop(address, []):
            conn.abort()
        for conn in self._busy.get(address, ()):
            conn.abort()

    def close(self) -> None:
        for address in list(self._idle):
            self.forget(address)


async def remove_copy(pool: NodeConnections, node: NodeState, file_id: int) -> bool:
    """Ask ``node`` to delete its copy of ``file_id``; best effort, because a copy left behind is an orphan that the
    node's next registration removes. Returns whether the node confirmed."""
    return await remove_copies(pool, node, [file_id])


async def remove_copies(pool: NodeConnections, node: NodeState, file_ids: Sequence[int]) -> bool:
    """``remove_copy`` for each of ``file_ids``, REMOVE_BATCH of them to a request, one request after another (the
    node unlinks a batch in well under a round trip's worth of CPU of one request each); returns whether the node
    confirmed them all. After a failure the rest are left, as orphans too.

    A node still registering (its session live, not yet up) is asked too: its reconciliation may have read the
    records before these rows went, so it would not take the copies for orphans, and they would stay until its next
    registration."""
    for start in range(0, len(file_ids), REMOVE_BATCH):
        batch = file_ids[start : start + REMOVE_BATCH]
        if not node.claimed:
            log.warning("orphan_left", node=node.id, file_ids=list(file_ids[start:]), error="node is down")
            return False
        try:
            async with pool.connection(node.address) as conn:
                await conn.send(Remove(batch[0], list(batch[1:]) or None))
                await conn.expect(Ok)
        except (DfsError, ConnectionLost) as err:
            log.warning("orphan_left", node=node.id, file_ids=list(file_ids[start:]), error=str(err))
            return False
    return True


async def held_by(pool: NodeConnections, node: NodeState) -> set[int]:
    """The ids of the files ``node`` holds now, page by page (``list_held``); raises ``ConnectionLost`` or the node's
    ``DfsError`` if it cannot say."""
    held: set[int] = set()
    after: int | None = None
    async with pool.connection(node.address) as conn:
        while True:
            await conn.send(ListHeld(after))
            page = await conn.expect(Inventory)
            held.update(page.file_ids)
            if not page.more or not page.file_ids:
                return held
            after = max(page.file_ids)

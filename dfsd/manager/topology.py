"""Who is where: the storage nodes the manager knows, whether each is up, and how full each is.

Plain data, no I/O: the control session of a node calls ``join`` when the node registers (claiming its id), ``activate``
once its inventory is reconciled, ``heartbeat`` as it beats and ``leave`` when the session ends for any reason, so a
node is up exactly while its session lives. Known nodes are
remembered (the manager persists them) so that ``status`` can show a node that is down, and its files answer "file
unavailable" rather than "does not exist".

Every change to a node's state is a method here, named after the event that causes it (``stored``, ``filled``,
``upload_started``...); the rest of the manager reads ``NodeState`` but never assigns to it, so each rule (a node is
forgotten only once empty and stopped; a full node is passed over until it has room again) has one home.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import BadRequest, NodeIdInUse
from ..protocol.messages import NodeInfo, Register

# Bytes a full node must gain before it is chosen again: one chunk, so it can take at least a small file.
ROOM_AGAIN = 1024 * 1024


@dataclass(slots=True)
class NodeState:
    id: int
    host: str
    port: int
    capacity: int = 0
    free: int = 0
    last_seen: float = 0.0  # unix time of the last sign of life
    up: bool = False  # registered, reconciled, and its session alive
    claimed: bool = False  # a live session holds this id (up, or still reconciling)
    orphans: int = 0  # orphans found on it when it last registered
    foreign: int = 0  # entries in its data directory that are not dfsd's, as it last registered
    files: int = 0  # stored files the manager has placed here
    used: int = 0  # their bytes
    uploading: int = 0  # uploads streaming to it now: counted by placement so concurrent uploads spread out
    full_at: int | None = None  # its free bytes just after it last refused a file for want of space
    refused: bool = False  # it refused a file for want of space; its next heartbeat sets full_at
    draining: bool = False  # being retired: gets no new files, and the rebalancer moves its files away

    @property
    def has_room(self) -> bool:
        """False from a "storage full" until the node has gained ROOM_AGAIN bytes (deletes, a cleaned disk)."""
        return not self.refused and (self.full_at is None or self.free >= self.full_at + ROOM_AGAIN)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def info(self, lost: int) -> NodeInfo:
        return NodeInfo(
            self.id,
            self.host,
            self.port,
            self.up,
            self.files,
            self.used,
            self.free,
            self.capacity,
            self.last_seen,
            lost,
            self.orphans,
            self.draining,
            self.foreign,
        )


class Topology:
    def __init__(self) -> None:
        self.nodes: dict[int, NodeState] = {}

    def snapshot(self) -> list[NodeState]:
        """The nodes, safe to call from another thread (the metrics server's) while the event loop changes them."""
        while True:
            try:
                return list(self.nodes.values())
            except RuntimeError:  # the dict changed size during the copy: try again
                continue

    def remember(self, node: NodeState) -> None:
        """Add a node known from an earlier run; it is down until it registers."""
        self.nodes[node.id] = node

    def join(self, register: Register, now: float) -> NodeState:
        """A node registered; ``NodeIdInUse`` if a live node already has its id."""
        if not 0 < register.port < 65536:
            raise BadRequest(f"bad request: port {register.port} is not a TCP port")
        node = self.nodes.get(register.node_id)
        if node is not None and node.claimed:
            raise NodeIdInUse(
                f"node id {register.node_id} is in use by the live node at {node.host}:{node.port}; "
                "give this node another --id"
            )
        if node is None:
            node = self.nodes[register.node_id] = NodeState(register.node_id, register.host, register.port)
        node.host, node.port = register.host, register.port
        node.capacity, node.free, node.foreign = register.capacity, register.free, register.foreign
        node.last_seen, node.claimed = now, True
        return node

    def activate(self, node: NodeState) -> None:
        """The node's inventory is reconciled: it takes requests now."""
        node.up = True

    def heartbeat(self, node: NodeState, free: int, capacity: int, now: float) -> None:
        node.free, node.capacity, node.last_seen = free, capacity, now
        if node.refused:  # the first report since the refusal, the refused file's partial bytes already removed
            node.full_at, node.refused = free, False
        elif node.has_room:
            node.full_at = None

    def filled(self, node: NodeState) -> None:
        """The node refused a file for want of space: choose it again only once it has gained room since.

        Gained since its next heartbeat, not since the last one: that one may have been sent while the refused file's
        partial bytes still filled the disk, and their removal is no room gained.
        """
        node.refused = True

    def leave(self, node: NodeState) -> None:
        node.up = node.claimed = False

    def found_orphans(self, node: NodeState, count: int) -> None:
        """Reconciling the node's inventory found ``count`` orphans on it (shown in ``status``)."""
        node.orphans = count

    def upload_started(self, node: NodeState) -> None:
        """An upload to ``node`` began: placement counts it, so that concurrent uploads spread out."""
        node.uploading += 1

    def upload_ended(self, node: NodeState) -> None:
        """An upload to ``node`` ended, committed or not (a committed one is counted by ``stored``)."""
        node.uploading -= 1

    def drain(self, node: NodeState, draining: bool) -> None:
        """Retire the node (it gets no new files, and the rebalancer moves its files away), or stop retiring it."""
        node.draining = draining

    def forget(self, node: NodeState) -> None:
        """Remove a retired node for good; ``BadRequest`` unless it is empty and stopped."""
        if node.claimed or node.files:
            raise BadRequest(
                f"bad request: node {node.id} can be forgotten only once it is empty and stopped "
                f"(it is {'running' if node.claimed else 'stopped'} with {node.files} files)"
            )
        del self.nodes[node.id]

    def is_up(self, node_id: int) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.up

    def stored(self, node_id: int, size: int) -> None:
        """A file of ``size`` bytes was committed on ``node_id``."""
        node = self.nodes[node_id]
        node.files += 1
        node.used += size
        node.free = max(0, node.free - size)

    def recount(self, usage: dict[int, tuple[int, int]]) -> None:
        """The database's counts (node id -> files, bytes), which other managers sharing it change too, in place of
        this manager's estimates."""
        for node in self.nodes.values():
            node.files, node.used = usage.get(node.id, (0, 0))

    def moved(self, source: int, target: int, size: int) -> None:
        self.removed(source, size)
        self.stored(target, size)

    def removed(self, node_id: int, size: int) -> None:
        """A file left ``node_id``. With managers sharing a database the counts are this manager's estimate between
        two recounts (another may have moved the file there unseen), so they stop at zero rather than go below."""
        node = self.nodes.get(node_id)
        if node is not None:
            node.files = max(0, node.files - 1)
            node.used = max(0, node.used - size)

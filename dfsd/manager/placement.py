"""Which storage node gets a new file: a pure function over the nodes' state, so it can be tested on its own."""

from __future__ import annotations

from collections.abc import Iterable

from ..protocol import ServersUnavailable, StorageFull
from .topology import NodeState


def choose_node(nodes: Iterable[NodeState], size: int | None) -> NodeState:
    """The up node with the fewest files (counting uploads under way); ties go to most free space, then lowest id.

    Nodes without room for a file of known ``size`` are passed over. Raises ``ServersUnavailable`` when no node is up
    and ``StorageFull`` when none of the up nodes has room.
    """
    up = [node for node in nodes if node.up]
    if not up:
        raise ServersUnavailable(
            "servers unavailable: no storage node is up; start one with `dfsd storage --id N --manager HOST:PORT`"
        )
    roomy = [node for node in up if size is None or node.free >= size]
    if not roomy:
        raise StorageFull(
            f"storage full: no storage node that is up has room for {size} bytes; free space or add a node"
        )
    return min(roomy, key=lambda node: (node.files + node.uploading, -node.free, node.id))

"""Which storage node gets a new file: a pure function over the nodes' state, so it can be tested on its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..protocol import ServersUnavailable, StorageFull
from .topology import NodeState


def choose_node(nodes: Iterable[NodeState], size: int | None, stored: Mapping[int, int] | None = None) -> NodeState:
    """The up node with the fewest files (counting uploads under way); ties go to most free space, then lowest id.

    ``stored``: the files on each node as a database shared with other managers counts them (with their uploads under
    way), instead of this manager's own count; this manager's uploads under way are added either way.

    Nodes without room for a file of known ``size``, or that refused a file for want of space and have not gained room
    since, are passed over. Raises ``ServersUnavailable`` when no node is up
    and ``StorageFull`` when none of the up nodes has room.
    """
    up = [node for node in nodes if node.up]
    if not up:
        raise ServersUnavailable(
            "servers unavailable: no storage node is up; start one with `dfsd storage --id N --manager HOST:PORT`"
        )
    roomy = [node for node in up if not node.draining and node.has_room and (size is None or node.free >= size)]
    if not roomy:
        wanted = "this file" if size is None else f"{size} bytes"
        raise StorageFull(f"storage full: no storage node that is up has room for {wanted}; free space or add a node")
    counts = {node.id: node.files for node in roomy} if stored is None else stored
    return min(roomy, key=lambda node: (counts.get(node.id, 0) + node.uploading, -node.free, node.id))


def plan_moves(
    files_per_node: dict[int, int], limit: int, draining: frozenset[int] = frozenset()
) -> list[tuple[int, int]]:
    """Up to ``limit`` moves (source id, target id) that first empty the ``draining`` nodes, then bring the other
    nodes' file counts to within one of each other: each from the fullest to the emptiest. Ties: the fullest with the
    highest id gives, the emptiest with the lowest takes.
    """
    counts = {node: files for node, files in files_per_node.items() if node not in draining}
    leaving = {node: files for node, files in files_per_node.items() if node in draining and files}
    moves: list[tuple[int, int]] = []
    while counts and len(moves) < limit:
        target = min(counts, key=lambda node: (counts[node], node))
        if leaving:
            source = max(leaving, key=lambda node: (leaving[node], node))
            leaving[source] -= 1
            if not leaving[source]:
                del leaving[source]
        else:
            source = max(counts, key=lambda node: (counts[node], node))
            if counts[source] - counts[target] <= 1:
                break
            counts[source] -= 1
        counts[target] += 1
        moves.append((source, target))
    return moves

"""Placement, topology and reconciliation, without any process or socket (the metadata store: test_store.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from dfsd.protocol import NodeIdInUse, ServersUnavailable, StorageFull
from dfsd.protocol.messages import Register

from dfsd.manager.placement import choose_node, plan_moves
from dfsd.manager.reconcile import reconcile
from dfsd.manager.topology import NodeState, Topology


def node(node_id: int, files: int = 0, free: int = 10**9, up: bool = True, uploading: int = 0) -> NodeState:
    state = NodeState(node_id, "127.0.0.1", 9000 + node_id, free=free, up=up)
    state.files, state.uploading = files, uploading
    return state


def test_fewest_files_wins() -> None:
    assert choose_node([node(1, files=5), node(2, files=3), node(3, files=4)], None).id == 2


def test_uploads_under_way_count_as_files() -> None:
    assert choose_node([node(1, files=3, uploading=2), node(2, files=4)], None).id == 2


def test_ties_go_to_most_free_space_then_lowest_id() -> None:
    assert choose_node([node(1, free=5), node(2, free=9), node(3, free=9)], None).id == 2
    assert choose_node([node(3), node(1), node(2)], None).id == 1


def test_down_nodes_and_full_nodes_are_passed_over() -> None:
    assert choose_node([node(1, up=False), node(2, files=100)], None).id == 2
    assert choose_node([node(1, free=10), node(2, files=100, free=1000)], 500).id == 2
    with pytest.raises(StorageFull):
        choose_node([node(1, free=10)], 500)
    with pytest.raises(ServersUnavailable):
        choose_node([node(1, up=False)], None)
    with pytest.raises(ServersUnavailable):
        choose_node([], None)


def test_placement_of_300_files_is_even() -> None:
    nodes = [node(1), node(2), node(3)]
    for _ in range(300):
        choose_node(nodes, 1).files += 1
    assert [n.files for n in nodes] == [100, 100, 100]


def test_a_live_node_id_cannot_join_twice() -> None:
    topology = Topology()
    first = topology.join(Register(7, "10.0.0.1", 9000, 100, 50), now=1.0)
    with pytest.raises(NodeIdInUse):  # claimed while its inventory is reconciled
        topology.join(Register(7, "10.0.0.2", 9000, 100, 50), now=1.5)
    topology.activate(first)
    with pytest.raises(NodeIdInUse):
        topology.join(Register(7, "10.0.0.2", 9000, 100, 50), now=2.0)
    assert first.host == "10.0.0.1" and first.up
    topology.leave(first)
    assert topology.join(Register(7, "10.0.0.2", 9001, 100, 50), now=3.0).address == ("10.0.0.2", 9001)


def test_plan_moves_evens_counts_within_one() -> None:
    moves = plan_moves({100: 100, 101: 100, 102: 100, 103: 0}, limit=1000)
    assert len(moves) == 75
    assert Counter(target for _, target in moves) == {103: 75}
    assert Counter(source for source, _ in moves) == {100: 25, 101: 25, 102: 25}
    assert plan_moves({1: 5, 2: 4}, 10) == []
    assert plan_moves({1: 10, 2: 0}, 3) == [(1, 2)] * 3
    assert plan_moves({}, 10) == []


def test_reconcile_sorts_every_case() -> None:
    result = reconcile(recorded={1, 2, 3, 4}, recorded_lost={4, 3}, held={1, 3, 7, 8}, in_flight={8})
    assert result.lost == [2]  # recorded, not held, not already marked
    assert result.found == [3]  # marked lost, held again
    assert result.orphans == [7]  # held, not recorded here, not in flight


def test_plan_moves_empties_draining_nodes_first() -> None:
    moves = plan_moves({1: 10, 2: 10, 3: 10}, limit=100, draining=frozenset({3}))
    assert Counter(source for source, _ in moves) == {3: 10}
    assert Counter(target for _, target in moves) == {1: 5, 2: 5}
    assert plan_moves({1: 0, 2: 4}, limit=100, draining=frozenset({1})) == []  # nothing to drain, nowhere to go
    assert choose_node([node(1, files=0), node(2, files=9)], None).id == 1
    draining = node(1, files=0)
    draining.draining = True
    assert choose_node([draining, node(2, files=9)], None).id == 2

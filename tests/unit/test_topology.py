"""The topology's state changes, without any process or socket: each is a method named after its event."""

from __future__ import annotations

import pytest
from dfsd.protocol import BadRequest
from dfsd.protocol.messages import Register

from dfsd.manager.placement import choose_node
from dfsd.manager.topology import NodeState, Topology


def joined(topology: Topology, node_id: int) -> NodeState:
    node = topology.join(Register(node_id, "127.0.0.1", 9000 + node_id, 10**9, 10**9), now=1.0)
    topology.activate(node)
    return node


def test_uploads_under_way_steer_placement_until_they_end() -> None:
    topology = Topology()
    first, second = joined(topology, 1), joined(topology, 2)
    topology.upload_started(first)
    assert choose_node(topology.nodes.values(), None) is second
    topology.upload_started(second)
    topology.upload_started(second)
    assert choose_node(topology.nodes.values(), None) is first
    topology.upload_ended(second)
    topology.upload_ended(second)
    assert (first.uploading, second.uploading) == (1, 0)


def test_a_draining_node_gets_no_new_files_until_undone() -> None:
    topology = Topology()
    first, second = joined(topology, 1), joined(topology, 2)
    topology.stored(second.id, 10)
    topology.drain(first, True)
    assert first.draining and choose_node(topology.nodes.values(), None) is second
    topology.drain(first, False)
    assert choose_node(topology.nodes.values(), None) is first


def test_a_node_is_forgotten_only_once_empty_and_stopped() -> None:
    topology = Topology()
    node = joined(topology, 1)
    with pytest.raises(BadRequest, match="running with 0 files"):
        topology.forget(node)
    topology.leave(node)
    topology.stored(node.id, 10)
    with pytest.raises(BadRequest, match="stopped with 1 files"):
        topology.forget(node)
    topology.removed(node.id, 10)
    topology.forget(node)
    assert topology.nodes == {}


def test_orphans_found_are_shown_in_the_node_info() -> None:
    topology = Topology()
    node = joined(topology, 1)
    topology.found_orphans(node, 3)
    assert node.info(lost=0).orphans == 3
    topology.found_orphans(node, 0)  # the next registration's count replaces the last one
    assert node.info(lost=0).orphans == 0


def test_full_disk_flake_a_refused_files_removed_bytes_counted_as_room_repro() -> None:
    """A node's last heartbeat before a "storage full" may have been sent while the refused file's partial bytes
    filled its disk; their removal then looked like room gained, and the node was chosen again at once. Room is now
    counted from the first report after the refusal."""
    topology = Topology()
    full, roomy = joined(topology, 1), joined(topology, 2)
    topology.stored(roomy.id, 10)
    topology.stored(roomy.id, 10)
    topology.heartbeat(full, 0, 8 << 20, now=2.0)  # sent while the refused upload's partial file filled the disk
    topology.filled(full)
    assert choose_node(topology.nodes.values(), None) is roomy
    topology.heartbeat(full, 6 << 20, 8 << 20, now=3.0)  # the partial file removed: the baseline, not room gained
    assert choose_node(topology.nodes.values(), None) is roomy
    topology.heartbeat(full, 8 << 20, 8 << 20, now=4.0)  # a file of 2 MiB deleted since
    assert choose_node(topology.nodes.values(), None) is full


def test_negative_file_count_after_a_move_seen_by_another_manager_repro() -> None:
    """A manager sharing the database deleted a file that the coordinator had moved onto a node it counted empty: its
    count went to -1 and ``status`` failed to encode (files are unsigned on the wire)."""
    topology = Topology()
    node = joined(topology, 1)
    topology.removed(node.id, 4096)
    assert (node.files, node.used) == (0, 0)

"""The in-flight owner and the marking of lost files, over a real metadata store in a temporary directory: no process,
no socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dfsd.protocol import NameExists
from dfsd.protocol.messages import Register

from dfsd.manager.inflight import InFlight
from dfsd.manager.lost import LostFiles
from dfsd.manager.store import FileRecord, MetadataStore
from dfsd.manager.topology import NodeState, Topology


@dataclass
class ManagerParts:
    """The parts of a manager the in-flight owner works with, and two nodes that are up."""

    store: MetadataStore
    topology: Topology
    lost: LostFiles
    in_flight: InFlight
    first: NodeState
    second: NodeState

    async def put(self, name: str, node: NodeState) -> FileRecord:
        """Upload ``name`` to ``node`` as the manager does: reserved, then committed inside the upload's block."""
        async with self.in_flight.upload(name, node) as file_id:
            await self.store.commit(file_id, name, node.id, 3, b"h" * 32, 1.0)
            self.topology.stored(node.id, 3)
        record = await self.store.find(name)
        assert record is not None
        return record


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ManagerParts]:
    store = await MetadataStore.open(tmp_path / "meta.db")
    topology = Topology()
    nodes = [topology.join(Register(node_id, "127.0.0.1", 9000 + node_id, 10**9, 10**9), 1.0) for node_id in (1, 2)]
    for node in nodes:
        topology.activate(node)
    lost = LostFiles(store)
    try:
        yield ManagerParts(store, topology, lost, InFlight(store, topology, lost), *nodes)
    finally:
        await store.close()


async def test_an_upload_is_in_flight_until_its_block_ends(manager: ManagerParts) -> None:
    async with manager.in_flight.upload("a", manager.first) as file_id:
        assert manager.first.uploading == 1  # placement sees it
        _recorded, _lost, in_flight = await manager.in_flight.on_node(manager.second.id)
        assert in_flight == {file_id}  # its bytes are no orphan on any node
        assert await manager.in_flight.still_orphans(manager.first.id, [file_id]) == []
        with pytest.raises(NameExists):
            async with manager.in_flight.upload("a", manager.second):
                pass
        assert manager.second.uploading == 0  # the refused upload counted nowhere
    assert manager.first.uploading == 0
    assert (await manager.in_flight.on_node(manager.first.id))[2] == set()
    assert await manager.in_flight.still_orphans(manager.first.id, [file_id]) == [file_id]  # never committed


async def test_a_failed_upload_frees_its_name(manager: ManagerParts) -> None:
    with pytest.raises(RuntimeError):
        async with manager.in_flight.upload("a", manager.first):
            raise RuntimeError("the node failed")
    assert manager.first.uploading == 0
    record = await manager.put("a", manager.second)
    assert record.node == manager.second.id


async def test_a_committed_upload_is_recorded_not_in_flight(manager: ManagerParts) -> None:
    record = await manager.put("a", manager.first)
    recorded, recorded_lost, in_flight = await manager.in_flight.on_node(manager.first.id)
    assert (recorded, recorded_lost, in_flight) == ({record.id}, set(), set())
    assert await manager.in_flight.still_orphans(manager.first.id, [record.id]) == []
    assert await manager.in_flight.still_orphans(manager.second.id, [record.id]) == [record.id]  # recorded elsewhere


async def test_a_move_is_in_flight_until_its_block_ends(manager: ManagerParts) -> None:
    record = await manager.put("a", manager.first)
    with manager.in_flight.move(record.id):
        assert manager.in_flight.unmovable() == {record.id}
        assert (await manager.in_flight.on_node(manager.second.id))[2] == {record.id}
        assert await manager.in_flight.still_orphans(manager.second.id, [record.id]) == []  # the copy on the target
    assert manager.in_flight.unmovable() == set()
    assert await manager.in_flight.still_orphans(manager.second.id, [record.id]) == [record.id]  # a failed move's copy


async def test_parts_being_composed_are_not_moved_until_every_build_ends(manager: ManagerParts) -> None:
    one, two = await manager.put("one", manager.first), await manager.put("two", manager.first)
    with manager.in_flight.compose([one.id, two.id]):
        with manager.in_flight.compose([one.id]):  # a second build of the same part
            assert manager.in_flight.unmovable() == {one.id, two.id}
        assert manager.in_flight.unmovable() == {one.id, two.id}
    assert manager.in_flight.unmovable() == set()
    assert await manager.in_flight.still_orphans(manager.first.id, [one.id]) == []  # a part is no orphan: it is stored


async def test_missing_bytes_are_a_loss_only_where_the_row_still_places_the_file(manager: ManagerParts) -> None:
    kept, moved, deleted, replaced = [await manager.put(name, manager.first) for name in ("kept", "moved", "del", "re")]
    assert await manager.store.relocate(moved.id, manager.first.id, manager.second.id)
    await manager.store.remove("del")
    await manager.store.remove("re")
    await manager.put("re", manager.second)  # the name now names another file

    current = await manager.in_flight.missing(moved, manager.first.id)
    assert current is not None and current.node == manager.second.id and current.lost is None  # follow it
    assert await manager.in_flight.missing(deleted, manager.first.id) is None
    assert await manager.in_flight.missing(replaced, manager.first.id) is None
    assert manager.lost.count == 0

    current = await manager.in_flight.missing(kept, manager.first.id)
    assert current is not None and current.node == manager.first.id  # lost
    record = await manager.store.find("kept")
    assert record is not None and record.lost is not None
    assert manager.lost.count == 1
    assert await manager.lost.refresh() == ["kept"]


async def test_files_marked_lost_are_counted_until_found(manager: ManagerParts) -> None:
    records = [await manager.put(name, manager.first) for name in ("a", "b")]
    await manager.lost.mark(manager.first.id, lost=[record.id for record in records])
    assert manager.lost.count == 2
    _recorded, recorded_lost, _in_flight = await manager.in_flight.on_node(manager.first.id)
    assert recorded_lost == {record.id for record in records}
    await manager.lost.mark(manager.first.id, lost=[], found=[records[0].id])
    assert manager.lost.count == 1
    assert await manager.lost.refresh() == ["b"]

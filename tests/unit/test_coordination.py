"""What the coordinator takes from the records other managers share: over a real metadata store in a temporary
directory, no process, no socket."""

from __future__ import annotations

from pathlib import Path

from dfsd.protocol.messages import Register

from dfsd.manager.coordination import Coordination
from dfsd.manager.inflight import InFlight
from dfsd.manager.lost import LostFiles
from dfsd.manager.store import MetadataStore, NodeRecord
from dfsd.manager.topology import Topology


class RebalanceRequests:
    """Counts the rebalances asked of it (the rebalancer's own work is not under test here)."""

    def __init__(self) -> None:
        self.asked = 0

    def request(self, automatic: bool = False) -> None:
        self.asked += 1


async def test_a_drain_whose_node_the_estimate_saw_empty_goes_on_once_a_recount_finds_a_file_repro(
    tmp_path: Path,
) -> None:
    """A recount that ran while a move committed took the move off twice: the coordinator's estimate said the
    draining node was empty, its rebalance stopped, and the file left on it stayed there for good."""
    store = await MetadataStore.open(tmp_path / "meta.db")
    try:
        topology = Topology()
        node = topology.join(Register(102, "127.0.0.1", 9102, 10**9, 10**9), 1.0)
        topology.activate(node)
        await store.save_node(NodeRecord(102, "127.0.0.1", 9102, 10**9, 10**9, 1.0, draining=True))
        topology.drain(node, True)
        await store.commit(1, "left-behind", 102, 3, b"h" * 32, 1.0)
        node.files = 0  # the estimate after the double count
        requests = RebalanceRequests()
        lost = LostFiles(store)
        coordination = Coordination(
            store,
            topology,
            InFlight(store, topology, lost),
            None,
            tmp_path,
            requests,
            None,  # type: ignore[arg-type]
        )

        await coordination._refresh_nodes()
        assert node.files == 1 and requests.asked == 1  # the drain goes on

        await coordination._refresh_nodes()
        assert requests.asked == 1  # nothing changed since: no new rebalance is asked for
    finally:
        await store.close()

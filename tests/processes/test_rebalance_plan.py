"""What the coordinator's rebalancer plans from, with managers sharing a real PostgreSQL database: the database's
counts, not this manager's estimate. No storage node and no manager process: the store and the plan alone."""

from __future__ import annotations

from dfsd.protocol.messages import Register

from dfsd.manager.inflight import InFlight
from dfsd.manager.lost import LostFiles
from dfsd.manager.rebalance import Rebalancer
from dfsd.manager.store import MetadataStore, PostgresURL
from dfsd.manager.topology import Topology


async def test_a_drain_whose_node_the_estimate_saw_empty_goes_on_repro(postgres_url: PostgresURL) -> None:
    """A recount that ran while a move committed took the move off twice: the coordinator's estimate said the
    draining node was empty, its rebalance judged the nodes balanced, and the file left on it stayed there for good."""
    store = await MetadataStore.open(postgres_url)
    try:
        topology = Topology()
        for node_id in (101, 102):
            topology.activate(topology.join(Register(node_id, "127.0.0.1", 9000 + node_id, 10**9, 10**9), 1.0))
        draining = topology.nodes[102]
        topology.drain(draining, True)
        file_id = await store.reserve("left-behind", 102)
        await store.commit(file_id, "left-behind", 102, 3, b"h" * 32, 1.0)
        await store.release("left-behind")
        draining.files = 0  # the estimate after the double count
        in_flight = InFlight(store, topology, LostFiles(store))

        async def taken_over() -> None:
            return None

        rebalancer = Rebalancer(store, topology, None, in_flight, True, lambda: True, taken_over)  # type: ignore[arg-type]
        assert await rebalancer.plan_round() == [(102, 101)]
        assert draining.files == 1
    finally:
        await store.close()

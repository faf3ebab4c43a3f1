"""Several managers on one PostgreSQL database, as real processes: one cluster with two doors.

Every test starts two managers on a fresh database of the session's PostgreSQL server (``tests/postgres.py``) and
three storage nodes, each dialing both managers, and ends with every acknowledged file read back byte-exact through
each manager and no orphan on any disk. The failover times are printed (``-s`` shows them), never asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LocalCluster, stalled
from postgres import PostgresServer

from dfsd.client import Client, FileNotFound, ManagerLost, NameExists, ServersUnavailable
from dfsd.manager.store import PostgresURL

NODES = (100, 101, 102)

# The placement bound across two managers: once uploads through both have settled, no two nodes' file counts differ
# by more than this (see test_placement_stays_even_across_two_managers).
PLACEMENT_BOUND = 2
# ... and for a moment while they race, by at most this: the counts a manager places on are read from the database
# before its choice, and can miss an upload chosen meanwhile through the other manager (its hold not yet written) and
# one of its own that committed while the read was out (no longer among its uploads under way, not yet in the
# counts it read). Seen: 3 once in this session's CI runs and once in the last session's, under load; 2 otherwise.
RACING_BOUND = PLACEMENT_BOUND + 2


@pytest.fixture
def two_managers(tmp_path: Path, postgres_url: PostgresURL) -> Iterator[LocalCluster]:
    """Managers 0 and 1 on one PostgreSQL database, and three nodes registered with both."""
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager()
        cluster.start_manager(number=1)
        for node_id in NODES:
            cluster.start_node(node_id)
        yield cluster
    finally:
        cluster.stop()


def address(cluster: LocalCluster, number: int) -> str:
    return cluster.managers[number].address


def coordinators(status) -> list[str]:  # type: ignore[no-untyped-def]
    return [manager.address for manager in status.managers if manager.coordinator]


async def check_files(cluster: LocalCluster, files: dict[str, bytes], via: list[int]) -> None:
    """Every file of ``files`` reads back byte-exact through each manager of ``via``, and no disk holds an orphan."""
    for number in via:
        async with Client(address(cluster, number)) as client:
            for name, data in files.items():
                assert await client.read(name) == data, (name, number)
    cluster.wait_no_orphans()


async def test_status_lists_both_managers_and_one_coordinator(two_managers: LocalCluster) -> None:
    cluster = two_managers
    cluster.wait_for(lambda status: len(coordinators(status)) == 1, "one coordinator")
    for number in (0, 1):
        async with Client(address(cluster, number)) as client:
            status = await client.status()
        assert sorted(manager.address for manager in status.managers) == sorted(address(cluster, n) for n in (0, 1))
        assert all(manager.up for manager in status.managers)
        assert {manager.database for manager in status.managers} == {str(cluster.database)}
        assert [node.id for node in status.nodes if node.up] == list(NODES)


async def test_one_name_raced_through_two_managers_gives_one_success_and_one_error_3(
    two_managers: LocalCluster,
) -> None:
    cluster = two_managers
    stored: dict[str, bytes] = {}
    async with Client(address(cluster, 0)) as first, Client(address(cluster, 1)) as second:
        for round_ in range(12):
            name = f"raced-{round_}"
            payloads = [os.urandom(1000 + round_), os.urandom(200_000 + round_)]
            results = await asyncio.gather(
                first.put(name, payloads[0]), second.put(name, payloads[1]), return_exceptions=True
            )
            errors = [result for result in results if isinstance(result, Exception)]
            assert len(errors) == 1 and isinstance(errors[0], NameExists), results
            stored[name] = payloads[0] if errors[0] is results[1] else payloads[1]
    await check_files(cluster, stored, via=[0, 1])


async def test_reads_through_one_manager_see_at_once_what_the_other_deleted_or_replaced(
    two_managers: LocalCluster,
) -> None:
    """Lookups go to the database in groups and keep no copy (``lookups.py``): a file deleted, or replaced, and
    acknowledged through one manager is gone, or new, for the very next read through the other, even while that one
    is busy with other reads (its lookups then share queries)."""
    cluster = two_managers
    files = {f"seen/{index}": os.urandom(100 + index) for index in range(24)}
    busy = asyncio.Event()
    async with Client(address(cluster, 0)) as writer, Client(address(cluster, 1)) as reader:
        for name, data in files.items():
            await writer.put(name, data)

        async def keep_reading(name: str) -> None:
            async with Client(address(cluster, 1)) as client:
                while not busy.is_set():
                    assert await client.read(name) == files[name]

        async with asyncio.TaskGroup() as group:
            for name in ("seen/0", "seen/1", "seen/2", "seen/3"):
                group.create_task(keep_reading(name))
            for index in range(4, 24):
                name = f"seen/{index}"
                assert await reader.read(name) == files[name]
                if index % 2:
                    await writer.delete(name)
                    with pytest.raises(FileNotFound):
                        await reader.read(name)
                    del files[name]
                else:
                    files[name] = os.urandom(300 + index)
                    await writer.put(name, files[name], replace=True)
                    assert await reader.read(name) == files[name]
            busy.set()
    await check_files(cluster, files, via=[0, 1])


async def test_placement_stays_even_across_two_managers(tmp_path: Path, postgres_url: PostgresURL) -> None:
    """Uploads through both managers at once, no rebalancing to hide a skew: the nodes' counts stay within the racing
    bound while uploads pour in, and within the placement bound once they have settled."""
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager("--no-auto-rebalance")
        cluster.start_manager("--no-auto-rebalance", number=1)
        for node_id in NODES:
            cluster.start_node(node_id)
        files: dict[str, bytes] = {}
        spreads: list[int] = []

        async def upload(number: int, worker: int) -> None:
            async with Client(address(cluster, number)) as client:
                for index in range(10):
                    name = f"m{number}/w{worker}/{index}"
                    files[name] = os.urandom(2000 + index)
                    await client.put(name, files[name])
                    counts = cluster.placed().values()  # committed files alone lag the uploads still in flight
                    spreads.append(max(counts) - min(counts))

        await asyncio.gather(*(upload(number, worker) for number in (0, 1) for worker in range(3)))
        counts = {node: len(ids) for node, ids in cluster.records().items()}
        print(f"\nplacement across two managers: final counts {counts}, widest spread seen {max(spreads)}")
        assert max(counts.values()) - min(counts.values()) <= PLACEMENT_BOUND
        assert max(spreads) <= RACING_BOUND
        await check_files(cluster, files, via=[1])
    finally:
        cluster.stop()


async def test_another_manager_coordinates_soon_after_the_coordinator_is_killed(two_managers: LocalCluster) -> None:
    cluster = two_managers
    files = {f"before/{index}": os.urandom(5000 + index) for index in range(9)}
    async with Client(address(cluster, 1)) as client:
        for name, data in files.items():
            await client.put(name, data)
    cluster.wait_for(lambda status: len(coordinators(status)) == 1, "one coordinator")
    async with Client(address(cluster, 0)) as client:
        (coordinator,) = coordinators(await client.status())
    dead = 0 if coordinator == address(cluster, 0) else 1
    survivor = 1 - dead

    killed = time.monotonic()
    cluster.managers[dead].kill()
    cluster.wait_for(
        lambda status: coordinators(status) == [address(cluster, survivor)],
        "the survivor coordinating",
        via=address(cluster, survivor),
    )
    print(f"\ncoordinator killed (kill -9) -> another coordinates: {time.monotonic() - killed:.2f} s")
    cluster.wait_for(
        lambda status: [m.up for m in status.managers if m.address == address(cluster, dead)] == [False],
        "the killed manager shown down",
        via=address(cluster, survivor),
    )

    # The new coordinator does the coordinator's jobs: a node joining gets its share of the files.
    cluster.start_node(103)
    cluster.wait_for(
        lambda status: {node.files for node in status.nodes} <= {2, 3} and not status.rebalance.running,
        "the files spread onto the new node",
        timeout=60,
        via=address(cluster, survivor),
    )
    await check_files(cluster, files, via=[survivor])


async def test_an_upload_killed_with_its_manager_leaves_no_name_and_no_bytes(two_managers: LocalCluster) -> None:
    cluster = two_managers
    async with Client(address(cluster, 0)) as client:
        await client.put("kept", b"acknowledged before the kill")
    stop = asyncio.Event()
    async with Client(address(cluster, 1)) as doomed:
        upload = asyncio.ensure_future(doomed.put("interrupted", stalled(os.urandom(3_000_000), stop)))
        await cluster.until_partial()
        cluster.managers[1].kill()
        with pytest.raises(ManagerLost):
            await upload

    async with Client(address(cluster, 0)) as client:
        assert [info.name async for info in client.list("")] == ["kept"]
        # The dead manager's reservation of the name runs out with its lease: then the name is free again.
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.put("interrupted", b"through the survivor")
                break
            except NameExists:
                assert time.monotonic() < deadline, "the dead manager's reservation was never dropped"
                await asyncio.sleep(0.2)
    cluster.start_manager(number=1)  # back on its port, with the nodes dialing it again
    await check_files(
        cluster, {"kept": b"acknowledged before the kill", "interrupted": b"through the survivor"}, [0, 1]
    )


async def test_the_database_restarted_under_load(tmp_path: Path) -> None:
    """PostgreSQL stopped (as by a crash) and started again while clients write and read through both managers:
    requests fail at once with error 1 naming the database, none hangs, every acknowledged file survives, and
    service resumes by itself. The server is the test's own, so stopping it disturbs no other test."""
    server = PostgresServer()
    server.start()
    cluster = LocalCluster(tmp_path, database=server.create_database())
    try:
        cluster.start_manager()
        cluster.start_manager(number=1)
        for node_id in NODES:
            cluster.start_node(node_id)
        acknowledged: dict[str, bytes] = {}
        refusals: list[str] = []
        stop = asyncio.Event()

        async def load(number: int) -> None:
            async with Client(address(cluster, number)) as client:
                for index in range(10_000):
                    if stop.is_set():
                        return
                    name, data = f"m{number}/{index}", os.urandom(1000 + 97 * index)
                    try:
                        async with asyncio.timeout(30):  # a hang fails the test instead of stalling it
                            await client.put(name, data)
                            acknowledged[name] = data
                            assert await client.read(name) == data
                    except ServersUnavailable as err:
                        refusals.append(err.message)
                        await asyncio.sleep(0.05)

        async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
            async with asyncio.timeout(60):
                while not condition():
                    await asyncio.sleep(0.05)

        loads = [asyncio.create_task(load(number)) for number in (0, 1)]
        await until(lambda: len(acknowledged) >= 20, "uploads before the outage")
        server.halt()
        await until(lambda: len(refusals) >= 4, "requests refused during the outage")
        acknowledged_in_outage = len(acknowledged)
        server.resume()
        resumed = time.monotonic()
        await until(lambda: len(acknowledged) >= acknowledged_in_outage + 20, "uploads after the outage")
        print(f"\ndatabase back -> 20 more uploads acknowledged: {time.monotonic() - resumed:.2f} s")
        stop.set()
        await asyncio.gather(*loads)

        # An upload whose hold the crash lost (holds commit without waiting for their flush) fails at its commit.
        assert all(
            "the metadata database is unreachable" in message or "lost its reservation" in message
            for message in refusals
        ), refusals
        await check_files(cluster, acknowledged, via=[0, 1])
    finally:
        cluster.stop()
        server.stop()


async def test_a_drain_and_a_rebalance_sent_to_another_manager_are_run_by_the_coordinator(
    two_managers: LocalCluster,
) -> None:
    cluster = two_managers
    cluster.wait_for(lambda status: len(coordinators(status)) == 1, "one coordinator")
    async with Client(address(cluster, 0)) as client:
        (coordinator,) = coordinators(await client.status())
    other = address(cluster, 1 if coordinator == address(cluster, 0) else 0)
    files = {f"f{index}": os.urandom(3000 + index) for index in range(9)}
    async with Client(other) as client:
        for name, data in files.items():
            await client.put(name, data)
        await client.drain(102)
    cluster.wait_for(
        lambda status: (
            [n.files for n in status.nodes if n.id == 102] == [0]
            and not status.rebalance.running
            and status.rebalance.moved >= 3
        ),  # the coordinator's progress, shown by the other manager
        "node 102 drained",
        timeout=60,
        via=other,
    )
    async with Client(other) as client:
        await client.drain(102, undo=True)
        await client.rebalance()
    cluster.wait_for(
        lambda status: {n.files for n in status.nodes} == {3} and not status.rebalance.running,
        "the files spread again",
        timeout=60,
        via=other,
    )
    await check_files(cluster, files, via=[0, 1])

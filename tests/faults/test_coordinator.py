"""The coordinator's jobs when the coordinator changes: real managers on one real PostgreSQL database, real nodes.

The coordinator alone reconciles nodes, removes orphans and moves files. These tests kill it (kill -9) or cut it off
from the database in the middle of that work, and check that the next one takes over and finishes it: the nodes it had
not reconciled are reconciled, an unfinished drain is finished, a move cut off leaves neither a loss nor an orphan nor
a second copy, and an upload another manager is committing is never taken for an orphan. Every test ends with every
acknowledged file read back byte-exact and every disk holding exactly the files the database places there.
The failover times are printed (``-s`` shows them), never asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from faultproxy import FaultProxy
from harness import LocalCluster

from dfsd.client import CHUNK_SIZE, Client, ServersUnavailable
from dfsd.manager.store import PostgresURL

# Large enough that moving a few of them takes a while, so that a kill lands in the middle of a move.
LARGE = 6 * 1024 * 1024


def draining_cluster(root: Path, database: PostgresURL, first_database: PostgresURL | None = None) -> LocalCluster:
    """Managers 0 (coordinating; on ``first_database``, a way to the same database) and 1, both without automatic
    rebalancing, so that only a drain moves files; three nodes; LARGE files stored, a third of them on node 102,
    which is being drained: the coordinator is moving files when this returns."""
    cluster = LocalCluster(root, database=database)
    try:
        cluster.start_manager("--no-auto-rebalance", *(["--db", first_database.url] if first_database else []))
        wait_coordinator(cluster, 0)
        cluster.start_manager("--no-auto-rebalance", number=1)
        for node_id in (100, 101, 102):
            cluster.start_node(node_id)
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def store_and_drain(cluster: LocalCluster) -> dict[str, bytes]:
    """Store LARGE files through manager 1, drain node 102 through it, and return once a move is under way."""
    files = {f"large/{index}": os.urandom(LARGE + index) for index in range(12)}
    async with Client(address(cluster, 1)) as client:
        for name, data in files.items():
            await client.put(name, data)
        assert len(cluster.records()[102]) >= 3
        await client.drain(102)  # run by the coordinator, manager 0
    await cluster.until_partial(timeout=30)  # no upload is under way: this is a move's copy on its target
    return files


def wait_drained(cluster: LocalCluster, via: int) -> None:
    cluster.wait_for(
        lambda s: [n.files for n in s.nodes if n.id == 102] == [0] and not s.rebalance.running,
        "node 102 drained",
        timeout=120,
        via=address(cluster, via),
    )


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: PostgresURL) -> Iterator[LocalCluster]:
    """Managers 0 and 1 on one database, manager 0 coordinating; no node yet."""
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager()
        wait_coordinator(cluster, 0)
        cluster.start_manager(number=1)
        yield cluster
    finally:
        cluster.stop()


def address(cluster: LocalCluster, number: int) -> str:
    return cluster.managers[number].address


def wait_coordinator(cluster: LocalCluster, number: int, via: int | None = None) -> float:
    """Until manager ``number`` is the one coordinator (as manager ``via`` sees it); returns when that was seen."""
    wanted = address(cluster, number)
    cluster.wait_for(
        lambda status: [m.address for m in status.managers if m.coordinator] == [wanted],
        f"manager {number} coordinating",
        via=address(cluster, number if via is None else via),
    )
    return time.monotonic()


def log_events(log: Path, event: str, **fields: object) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())]


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def check_files(cluster: LocalCluster, files: dict[str, bytes], via: list[int]) -> None:
    """Every file of ``files`` reads back byte-exact through each manager of ``via``, and every disk holds exactly
    the files recorded there: no orphan, and no file on two nodes."""
    for number in via:
        async with Client(address(cluster, number)) as client:
            for name, data in files.items():
                assert await client.read(name) == data, (name, number)
    cluster.wait_no_orphans()


async def test_replacing_upload_survives_the_coordinators_orphan_check_repro(cluster: LocalCluster) -> None:
    """A replacing upload was reserved only in the memory of its manager: the coordinator, reconciling the node
    between the node's ``stored`` and the commit, took the new bytes for an orphan and removed them, and the file
    the client was told was stored had no bytes. Here the commit (through manager 1) is held up by a row lock while
    the node registers again with the coordinator (manager 0), whose orphan check must leave the bytes alone."""
    with FaultProxy(address(cluster, 0)) as to_coordinator:
        cluster.start_node(100, False, f"{to_coordinator.address},{address(cluster, 1)}")
        for number in (0, 1):
            cluster.wait_for(lambda s: [n.up for n in s.nodes] == [True], "node 100 up", via=address(cluster, number))
        async with Client(address(cluster, 1)) as client:
            await client.put("doc", b"the first version")
        (old_id,) = cluster.records()[100]
        assert cluster.database is not None
        blocker = await asyncpg.connect(cluster.database.url)
        try:
            locked = blocker.transaction()
            await locked.start()
            await blocker.execute("SELECT 1 FROM files WHERE name = 'doc' FOR UPDATE")  # the commit waits on this
            payload = os.urandom(3 * 1024 * 1024)
            async with Client(address(cluster, 1)) as client:
                upload = asyncio.create_task(client.put("doc", payload, replace=True))
                await until(lambda: len(cluster.ids_on_disk(100) - {old_id}) == 1, "the new bytes stored on the node")
                log = cluster.managers[0].log
                before = len(log_events(log, "reconciled", node=100))
                to_coordinator.cut()  # the node registers with the coordinator again, which reconciles it
                await until(lambda: len(log_events(log, "reconciled", node=100)) > before, "the reconciliation")
                cluster.wait_for(
                    lambda s: [n.up for n in s.nodes] == [True], "node 100 up again", via=address(cluster, 0)
                )
                assert not upload.done()
                await locked.rollback()
                stored = await upload
        finally:
            await blocker.close()
        assert stored.sha256 == hashlib.sha256(payload).digest()
        await check_files(cluster, {"doc": payload}, via=[0, 1])
        assert log_events(cluster.managers[0].log, "reconciled", node=100)[-1]["orphans"] == 0


async def test_a_new_coordinator_reconciles_the_nodes_that_registered_before_it_took_over(
    cluster: LocalCluster,
) -> None:
    """A node that registers only with a manager that does not coordinate is not reconciled then; when that manager
    takes over it must be: a file deleted while the node was down is an orphan there, one whose bytes vanished is
    lost."""
    cluster.start_node(100)
    files = {f"f{index}": os.urandom(1000 + index) for index in range(4)}
    async with Client(address(cluster, 1)) as client:
        for name, data in files.items():
            await client.put(name, data)
    orphan_id, lost_id = await _file_id(cluster, "f0"), await _file_id(cluster, "f1")
    cluster.nodes[100].kill()
    cluster.wait_node_down(100)
    async with Client(address(cluster, 1)) as client:
        await client.delete("f0")  # its bytes stay on the node, which is down: an orphan
    del files["f0"]
    (lost_path,) = [p for p in cluster.stored_files(100) if int(p.name.split(".")[1]) == lost_id]
    lost_path.unlink()  # behind the node's back: f1 is lost

    cluster.start_node(100, False, address(cluster, 1))  # registers with manager 1 alone, which does not coordinate
    cluster.wait_for(lambda s: [n.up for n in s.nodes] == [True], "node 100 up at 1", via=address(cluster, 1))
    assert log_events(cluster.managers[1].log, "reconciliation_left_to_coordinator", node=100)
    assert orphan_id in cluster.ids_on_disk(100)

    cluster.managers[0].kill()
    wait_coordinator(cluster, 1)
    cluster.wait_for(lambda s: s.lost == ["f1"], "f1 marked lost by the new coordinator", via=address(cluster, 1))
    await until(lambda: orphan_id not in cluster.ids_on_disk(100), "the orphan removed by the new coordinator")
    async with Client(address(cluster, 1)) as client:
        await client.delete("f1")
    del files["f1"]
    await check_files(cluster, files, via=[1])


async def _file_id(cluster: LocalCluster, name: str) -> int:
    assert cluster.database is not None
    conn = await asyncpg.connect(cluster.database.url)
    try:
        file_id: int = await conn.fetchval("SELECT id FROM files WHERE name = $1", name)
        return file_id
    finally:
        await conn.close()


async def test_a_coordinator_killed_mid_move_leaves_no_loss_no_orphan_and_no_second_copy(
    tmp_path: Path, postgres_url: PostgresURL
) -> None:
    """kill -9 of the coordinator while it copies a file to another node, in the middle of a drain: the next
    coordinator removes what the move left behind and finishes the drain (automatic rebalancing is off: it resumes
    because a drain was unfinished)."""
    cluster = draining_cluster(tmp_path, postgres_url)
    try:
        files = await store_and_drain(cluster)
        cluster.managers[0].kill()
        killed = time.monotonic()
        print(f"\ncoordinator killed mid-move -> another coordinates: {wait_coordinator(cluster, 1) - killed:.2f} s")
        wait_drained(cluster, via=1)
        assert log_events(cluster.managers[1].log, "took_over")
        await check_files(cluster, files, via=[1])
    finally:
        cluster.stop()


async def test_a_coordinator_cut_off_from_the_database_stops_coordinating_and_resumes_service_when_it_is_back(
    tmp_path: Path, postgres_url: PostgresURL
) -> None:
    """Manager 0 reaches PostgreSQL through a proxy, which black-holes its link (and resets its connections) in the
    middle of a drain: manager 1 takes over and finishes the drain, manager 0 stops coordinating and answers error 1
    meanwhile, and once the link heals it serves again without coordinating: one coordinator at a time."""
    database = urlsplit(postgres_url.url)
    with FaultProxy(f"{database.hostname}:{database.port}") as to_database:
        proxied = PostgresURL(postgres_url.url.replace(f":{database.port}/", f":{to_database.address.split(':')[1]}/"))
        cluster = draining_cluster(tmp_path, postgres_url, proxied)
        try:
            files = await store_and_drain(cluster)
            to_database.blackhole()
            to_database.cut()
            cut = time.monotonic()
            print(f"\ncoordinator cut off -> another coordinates: {wait_coordinator(cluster, 1) - cut:.2f} s")
            await until(lambda: bool(log_events(cluster.managers[0].log, "stopped_coordinating")), "0 stepping down")
            async with Client(address(cluster, 0)) as client:
                with pytest.raises(ServersUnavailable, match="metadata database is unreachable") as refused:
                    await client.stat("large/0")
                assert "may or may not have been made" in str(refused.value)  # never "nothing was changed": unknown
            wait_drained(cluster, via=1)

            to_database.heal()
            deadline = time.monotonic() + 60
            async with Client(address(cluster, 0)) as client:
                while True:
                    try:
                        assert await client.read("large/0") == files["large/0"]
                        break
                    except ServersUnavailable:
                        assert time.monotonic() < deadline, "manager 0 never served again"
                        await asyncio.sleep(0.2)
            for number in (0, 1):
                wait_coordinator(cluster, 1, via=number)
            assert len(log_events(cluster.managers[0].log, "coordinating")) == 1  # it never took the lock again
            await check_files(cluster, files, via=[0, 1])
        finally:
            cluster.stop()


async def test_a_download_cut_by_the_killed_coordinator_resumes_on_the_next_one(cluster: LocalCluster) -> None:
    """dfs-cat reads a large file through the coordinator, which is killed (kill -9) after the first chunk: dfs-cat
    reads the rest through manager 1, which is taking over at that very moment (reconciling every node), byte-exact.
    A client reading small files in a loop meanwhile shows how long it waits for its next answer."""
    for node_id in (100, 101):
        cluster.start_node(node_id)
    # 48 MiB, as in test_failover.py (BIG): more than the buffers on the way hold (socket buffers, the manager's write
    # buffer, the two 4 MiB batches of dfs-cat's writer thread), so the manager still has bytes to relay when killed.
    payload = os.urandom(48 * 1024 * 1024)
    small = os.urandom(1000)
    async with Client(address(cluster, 0)) as client:
        await client.put("big", payload)
        await client.put("small", small)
    cat = subprocess.Popen(
        [str(Path(sys.executable).parent / "dfs-cat"), "big"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DFS_MANAGER": cluster.manager_addresses},
    )
    served: list[tuple[float, float]] = []  # when each read of the reader began and ended
    stop = asyncio.Event()

    async def reader() -> None:
        async with Client(cluster.manager_addresses) as client:
            while not stop.is_set():
                began = time.monotonic()
                assert await client.read("small") == small
                served.append((began, time.monotonic()))

    reading = asyncio.create_task(reader())
    try:
        await until(lambda: len(served) > 3, "the reader served")
        assert cat.stdout is not None
        first = cat.stdout.read(CHUNK_SIZE)  # dfs-cat now waits on the pipe, and manager 0 on dfs-cat
        cluster.managers[0].kill()
        killed = time.monotonic()
        await until(lambda: served[-1][0] > killed, "the reader served by manager 1")
        again = next(ended for began, ended in served if began > killed)
        print(f"\nmanager killed -> a client served again: {again - killed:.3f} s")
        rest, err = await asyncio.to_thread(cat.communicate, timeout=120)
    finally:
        stop.set()
        await asyncio.gather(reading, return_exceptions=True)
        if cat.poll() is None:
            cat.kill()
            cat.wait()
    assert cat.returncode == 0, err
    assert first + rest == payload
    assert "reading the rest of 'big' from another manager" in err.decode()
    wait_coordinator(cluster, 1)
    await check_files(cluster, {"big": payload, "small": small}, via=[1])

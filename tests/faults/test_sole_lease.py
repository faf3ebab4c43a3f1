"""The sole lease end to end (``dfsd/manager/sole_lease.py``, ``name_cache.py``), real managers on a real PostgreSQL:
a manager alone on its database answers names from memory, and never answers one that a delete or replace
acknowledged through another manager has changed, whether that manager started beside it, or the database went away,
or a write reached the database late (its sender dead meanwhile, even).

The manager's name-cache metrics (``dfsd_name_cache_hits`` / ``_misses``: names asked of the database) show which
reads asked the database. Nothing here is timed: each wait is a bounded loop on an observable change.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from harness import LocalCluster, free_port, scraped
from postgres import PostgresServer

from dfsd.client import Client, FileNotFound, ServersUnavailable
from dfsd.manager.store import PostgresURL

NODE = 100


def name_counts(metrics_port: int) -> dict[str, float]:
    """The name cache's metrics of the manager serving ``metrics_port``: hits, misses, names."""
    return scraped(metrics_port, "dfsd_name_cache_")


class Holder:
    """Manager 0 of ``cluster`` with metrics, and a node that will also dial manager 1 once it is started."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.metrics_port = free_port()
        cluster.start_manager("--metrics-port", str(self.metrics_port))
        cluster.manager_ports[1] = free_port()  # the node dials it from the start, and reaches it once it listens
        cluster.start_node(NODE)

    def counts(self) -> dict[str, float]:
        return name_counts(self.metrics_port)

    async def read_from_memory(self, client: Client, name: str, data: bytes) -> None:
        """Read ``name`` until its name is answered from memory (the lease is taken DURATION after the manager's
        first renewal): then it is held there."""
        async with asyncio.timeout(30):
            while True:
                hits = self.counts()["hits"]
                assert await client.read(name) == data
                if self.counts()["hits"] > hits:
                    return
                await asyncio.sleep(0.1)

    def start_second(self, database: PostgresURL | None = None) -> str:
        """Manager 1 (on ``database``, default the cluster's), with the node up there too; its address."""
        if database is not None:
            self.cluster.database = database
        second = self.cluster.start_manager(number=1)
        self.cluster.wait_for(
            lambda status: any(node.id == NODE and node.up for node in status.nodes),
            "the node up at manager 1",
            via=second.address,
        )
        return second.address


@pytest.fixture
def holder(tmp_path: Path, postgres_url: PostgresURL) -> Iterator[Holder]:
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        yield Holder(cluster)
    finally:
        cluster.stop()


async def test_a_manager_alone_on_postgresql_reads_a_name_again_without_asking_the_database(holder: Holder) -> None:
    data = os.urandom(1024)
    async with Client(holder.cluster.address) as client:
        await client.put("often", data)
        await holder.read_from_memory(client, "often", data)
        before = holder.counts()
        for _ in range(20):
            assert await client.read("often") == data
            assert (await client.stat("often")).size == len(data)
        after = holder.counts()
    assert after["misses"] == before["misses"]
    assert after["hits"] == before["hits"] + 40


async def test_a_name_written_by_the_holder_is_read_without_asking_the_database(holder: Holder) -> None:
    async with Client(holder.cluster.address) as client:
        await client.put("first", b"1")
        await holder.read_from_memory(client, "first", b"1")
        before = holder.counts()
        files = {f"fresh/{index}": os.urandom(100 + index) for index in range(10)}
        for name, data in files.items():
            await client.put(name, data)
        for name, data in files.items():
            assert await client.read(name) == data
        after = holder.counts()
    assert after["hits"] - before["hits"] == len(files)
    assert after["misses"] - before["misses"] <= len(files)  # the puts' own look-ups of a free name, at most


@pytest.mark.parametrize("change", ["delete", "replace"])
async def test_a_name_held_in_memory_changed_through_a_manager_that_starts_beside_it_is_never_read_old(
    holder: Holder, change: str
) -> None:
    old, new = os.urandom(1024), os.urandom(900)
    async with Client(holder.cluster.address) as near:
        await near.put("x", old)
        await holder.read_from_memory(near, "x", old)
        second = holder.start_second()
        async with Client(second) as far:
            if change == "delete":
                await far.delete("x")
            else:
                await far.put("x", new, replace=True)
        if change == "delete":
            with pytest.raises(FileNotFound):
                await near.read("x")
        else:
            assert await near.read("x") == new


async def test_the_holder_stops_answering_from_memory_while_the_database_is_down_and_resumes_after(
    tmp_path: Path,
) -> None:
    """PostgreSQL stopped: the holder's reads answer from memory only until its rights run out, then fail with error 1
    naming the database (not the bytes it held); once the database is back, reads resume, from memory again."""
    server = PostgresServer()
    server.start()
    cluster = LocalCluster(tmp_path, database=server.create_database())
    try:
        holder = Holder(cluster)
        data = os.urandom(1024)
        async with Client(cluster.address) as client:
            await client.put("kept", data)
            await holder.read_from_memory(client, "kept", data)
            server.halt()
            refusal = await _until_refused(lambda: client.read("kept"), data)
            assert "metadata database is unreachable" in refusal.message, refusal.message
            for _ in range(5):  # no longer from memory, while the database stays away
                with pytest.raises(ServersUnavailable):
                    await client.read("kept")
            server.resume()
            async with asyncio.timeout(30):
                while True:
                    try:
                        assert await client.read("kept") == data
                        break
                    except ServersUnavailable:
                        await asyncio.sleep(0.1)
            await holder.read_from_memory(client, "kept", data)
    finally:
        cluster.stop()
        server.stop()


async def test_a_holders_delete_that_reaches_the_database_after_a_newcomer_ended_its_turn_is_made_under_the_new_one(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The holder's link to the database stalls: a delete it sent while it held the lease reaches the database only
    after another manager started (ending the holder's turn) and deleted a name the holder kept in memory. The late
    delete is refused by the database (its fence: the lease changed), sent again under the new generation once the
    holder has renewed, and acknowledged; the holder answers neither name from memory."""
    direct = postgres_server.create_database()
    with FaultProxy(_host_port(direct)) as proxy:
        proxied = PostgresURL(direct.url.replace(_host_port(direct), proxy.address))
        cluster = LocalCluster(tmp_path, database=proxied)
        try:
            holder = Holder(cluster)
            async with Client(cluster.address) as near:
                for name in ("x", "y"):
                    await near.put(name, name.encode())
                    await holder.read_from_memory(near, name, name.encode())
                proxy.stall_after(b"DELETE FROM files")
                late = asyncio.create_task(near.delete("y"))
                async with asyncio.timeout(30):
                    while not proxy.holding.is_set():
                        await asyncio.sleep(0.05)
                second = holder.start_second(direct)
                async with Client(second) as far:
                    await far.delete("x")
                proxy.release()
                await late
                assert "fenced_write_refused" in cluster.managers[0].log.read_text()
                for address in (cluster.address, second):
                    async with Client(address) as client:
                        for name in ("x", "y"):
                            with pytest.raises(FileNotFound):
                                await client.read(name)
        finally:
            cluster.stop()


async def test_a_delete_that_reaches_the_database_after_another_manager_took_the_lease_is_refused_repro(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Managers A and B share the database, so neither keeps names in memory. B's delete of ``x`` is held up on its
    link to PostgreSQL (the proxy holds its execution, sent after its statement was prepared), and B dies: B's record
    lapses, A takes the lease and answers ``x`` from memory. Only then does B's delete reach the database. It must not
    be made: nothing would ever tell A (B never renews again), and A would answer the old ``x`` for good. Before the
    fence it was made, and A went on answering ``x`` from memory while the database held no ``x``.

    The stall is the proxy's, the delete and the database real: as close as a test gets to a COMMIT held in a router
    queue, which is what the proxy's held bytes are (a delete is one statement, a transaction of its own)."""
    direct = postgres_server.create_database()
    with FaultProxy(_host_port(direct)) as proxy:
        cluster = LocalCluster(tmp_path, database=direct)
        try:
            holder = Holder(cluster)
            far_address = holder.start_second(PostgresURL(direct.url.replace(_host_port(direct), proxy.address)))
            data = os.urandom(1024)
            async with Client(cluster.address) as near:
                await near.put("x", data)
                proxy.stall_after(b"DELETE FROM files")
                async with Client(far_address) as far:
                    late = asyncio.create_task(far.delete("x"))
                    async with asyncio.timeout(30):
                        while not proxy.holding.is_set():
                            await asyncio.sleep(0.05)
                    cluster.managers[1].kill()
                    with pytest.raises(ServersUnavailable):  # B's death cut its request off
                        await late
                await holder.read_from_memory(near, "x", data)
                proxy.release()
                async with asyncio.timeout(30):
                    while not proxy.stall_over.is_set():
                        await asyncio.sleep(0.05)
                stored = bool(postgres_server.execute("SELECT 1 FROM files WHERE name = 'x'", _database(direct)))
                try:
                    answered = await near.read("x") == data
                except FileNotFound:
                    answered = False
                assert answered == stored, "manager A answered x from memory after the database deleted it"
                assert stored, "the late delete was made under a lease that had changed"
        finally:
            cluster.stop()


def _database(url: PostgresURL) -> str:
    return url.url.rpartition("/")[2]


def _host_port(url: PostgresURL) -> str:
    return url.url.rpartition("@")[2].split("/")[0]


async def _until_refused(read: Callable[[], Awaitable[bytes]], data: bytes) -> ServersUnavailable:
    """Read until refused with error 1; every read answered meanwhile gave ``data``."""
    async with asyncio.timeout(30):
        while True:
            try:
                assert await read() == data
            except ServersUnavailable as err:
                return err
            await asyncio.sleep(0.05)

"""Several managers on one PostgreSQL database: storage nodes keep a session with each, and clients fail over.

Every test runs two real managers (A and B) on one real PostgreSQL database and real storage nodes started with
``--manager A,B``; the clients are given ``A,B`` too. A manager is killed with kill -9 in the middle of a read or an
upload, and the client must finish the request on the other one: byte-exact, and stored exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from harness import Daemon, LocalCluster, run_tool

from dfsd.client import CHUNK_SIZE, Client, ServersUnavailable, format_address
from dfsd.manager.store import PostgresURL

# Large enough that a manager killed after the first chunk has not yet relayed the whole file into the buffers on the
# way: socket buffers (up to 8 MiB each way, the kernel doubling our 4 MiB), the manager's write buffer, and the two
# batches of 4 MiB a client's writer thread may hold (bulk.BATCH_BYTES).
BIG = 48 * 1024 * 1024


@dataclass
class TwoManagers:
    """Managers A (number 0) and B (number 1) on one database, and storage nodes registered with both."""

    cluster: LocalCluster
    url: PostgresURL

    @property
    def a(self) -> Daemon:
        return self.cluster.managers[0]

    @property
    def b(self) -> Daemon:
        return self.cluster.managers[1]

    @property
    def both(self) -> str:
        return self.cluster.manager_addresses

    def start_node(self, node_id: int) -> None:
        """A node told of both managers, up at each of them that runs."""
        self.cluster.start_node(node_id)

    def wait_up_at(self, address: str, node_id: int) -> None:
        self.cluster.wait_for(
            lambda status: any(node.id == node_id and node.up for node in status.nodes),
            f"node {node_id} up at {address}",
            via=address,
        )


@pytest.fixture
def managers(tmp_path: Path, postgres_url: PostgresURL) -> Iterator[TwoManagers]:
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager()
        cluster.start_manager(number=1)
        yield TwoManagers(cluster, postgres_url)
    finally:
        cluster.stop()


def unused_address() -> str:
    """An address where nothing listens (a port the kernel just handed out and took back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def stored_ids(url: PostgresURL, name: str) -> list[int]:
    conn = await asyncpg.connect(url.url)
    try:
        return [row[0] for row in await conn.fetch("SELECT id FROM files WHERE name = $1", name)]
    finally:
        await conn.close()


def test_node_with_two_managers_is_up_in_both(managers: TwoManagers) -> None:
    managers.start_node(100)
    for manager in (managers.a, managers.b):
        managers.wait_up_at(manager.address, 100)


async def test_client_skips_a_manager_that_is_down(managers: TwoManagers) -> None:
    managers.start_node(100)
    down = unused_address()
    async with Client(f"{down},{managers.b.address}") as client:
        await client.put("hello", b"hello world")
        assert await client.read("hello") == b"hello world"
        assert format_address(client.address) == managers.b.address  # remembered: the next request goes there first
    listing = run_tool("dfs-ls", manager=f"{down},{managers.b.address}")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.decode().split() == ["hello"]


async def test_client_with_every_manager_down_names_them_all() -> None:
    first, second = unused_address(), unused_address()
    with pytest.raises(ServersUnavailable) as refused:
        async with Client(f"{first},{second}") as client:
            await client.stat("anything")
    assert first in str(refused.value) and second in str(refused.value)
    result = run_tool("dfs-cat", "anything", manager=f"{first},{second}")
    assert result.returncode == 1
    assert "cannot reach any of the managers" in result.stderr.decode()


async def test_read_cut_by_a_killed_manager_resumes_on_the_other(managers: TwoManagers) -> None:
    managers.start_node(100)
    payload = os.urandom(BIG)
    async with Client(managers.a.address) as client:
        await client.put("big", payload)
    notices: list[str] = []
    received = hashlib.sha256()
    size = 0
    async with Client(managers.both, on_retry=notices.append) as client:
        download = await client.get("big")
        async for chunk in download:
            if size == 0:
                managers.a.kill()  # kill -9, with the rest of the file still to come
            received.update(chunk)
            size += len(chunk)
    assert size == BIG and received.digest() == hashlib.sha256(payload).digest()
    assert len(notices) == 1 and managers.b.address in notices[0], notices


def test_tools_with_the_first_manager_killed_use_the_other(managers: TwoManagers, tmp_path: Path) -> None:
    managers.start_node(100)
    payload = os.urandom(BIG)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    assert run_tool("dfs-push", str(source), manager=managers.a.address).returncode == 0
    managers.a.kill()
    result = run_tool("dfs-cat", "big.bin", manager=managers.both)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


async def test_upload_cut_by_a_killed_manager_is_stored_once(managers: TwoManagers) -> None:
    managers.start_node(100)
    payload = os.urandom(BIG)
    notices: list[str] = []
    async with Client(managers.both, on_retry=notices.append) as client:
        await client.put("warm-up", b"x")  # the client's connection is open to A before the upload starts
        upload = asyncio.create_task(client.put("cut", payload))
        await managers.cluster.until_partial(100)
        managers.a.kill()
        stored = await upload
        assert stored.sha256 == hashlib.sha256(payload).digest()
        assert await client.read("cut") == payload
    assert len(notices) == 1 and "asking" in notices[0], notices
    assert len(await stored_ids(managers.url, "cut")) == 1
    recorded = set(await stored_ids(managers.url, "cut")) | set(await stored_ids(managers.url, "warm-up"))
    deadline = time.monotonic() + 15
    while managers.cluster.ids_on_disk(100) != recorded or managers.cluster.partial_files(100):
        assert time.monotonic() < deadline, (managers.cluster.ids_on_disk(100), recorded)
        await asyncio.sleep(0.05)


def test_status_lists_every_manager_and_the_coordinator(managers: TwoManagers) -> None:
    managers.start_node(100)
    deadline = time.monotonic() + 10  # a manager's record shows it coordinates once it has taken the lock
    while True:
        result = run_tool("dfsd", "status", "--json", manager=managers.both)
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)["managers"]
        coordinators = sum(manager["coordinator"] for manager in listed)
        assert coordinators <= 1, listed
        if coordinators == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(manager["address"] for manager in listed) == sorted([managers.a.address, managers.b.address])
    assert all(manager["up"] and manager["database"] == str(managers.url) for manager in listed), listed
    assert coordinators == 1, listed
    table = run_tool("dfsd", "status", manager=managers.both).stdout.decode().splitlines()
    header = table.index(next(line for line in table if line.startswith("MANAGER")))
    assert table[header].split() == ["MANAGER", "STATE", "ROLE", "DATABASE"]
    rows = [line.split() for line in table[header + 1 :]]
    assert sorted(row[0] for row in rows) == sorted([managers.a.address, managers.b.address])
    assert sorted(row[2] for row in rows) == ["-", "coordinator"]


def test_node_joins_while_one_manager_is_down_and_registers_when_it_is_back(managers: TwoManagers) -> None:
    managers.a.kill()
    managers.start_node(100)  # A is down: the node is up through B alone
    managers.cluster.start_manager()  # A again, on its old port
    managers.wait_up_at(managers.a.address, 100)  # the node's own loop for A found it back


def test_dfs_cat_cut_off_by_a_killed_manager_says_so_and_finishes(managers: TwoManagers, tmp_path: Path) -> None:
    managers.start_node(100)
    payload = os.urandom(BIG)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    assert run_tool("dfs-push", str(source), manager=managers.a.address).returncode == 0
    cat = subprocess.Popen(
        [str(Path(sys.executable).parent / "dfs-cat"), "big.bin"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DFS_MANAGER": managers.both},
    )
    try:
        assert cat.stdout is not None
        first = cat.stdout.read(CHUNK_SIZE)  # dfs-cat now waits on the pipe, and A on dfs-cat
        managers.a.kill()
        rest, err = cat.communicate(timeout=120)
    finally:
        if cat.poll() is None:
            cat.kill()
            cat.wait()
    assert cat.returncode == 0, err
    assert first + rest == payload
    notices = err.decode().splitlines()
    assert len(notices) == 1 and notices[0].startswith("dfs-cat: servers unavailable: lost the connection"), notices
    assert "reading the rest of 'big.bin' from another manager" in notices[0]

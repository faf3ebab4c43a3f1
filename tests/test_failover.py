"""Several managers on one PostgreSQL database: storage nodes keep a session with each, and clients fail over.

Every test runs two real managers (A and B) on one real PostgreSQL database and real storage nodes started with
``--manager A,B``; the clients are given ``A,B`` too. A manager is killed with kill -9 in the middle of a read or an
upload, and the client must finish the request on the other one: byte-exact, and stored exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from harness import Daemon, LocalCluster, run_tool, start_daemon

from dfsd import aio
from dfsd.client import Client, ServersUnavailable, format_address
from dfsd.manager.store import PostgresURL

# Large enough that a manager killed after the first chunk has not yet relayed the whole file into socket buffers.
BIG = 24 * 1024 * 1024


@dataclass
class TwoManagers:
    """Managers A (the cluster's own) and B on one database, and storage nodes registered with both."""

    cluster: LocalCluster
    b: Daemon
    url: PostgresURL

    @property
    def a(self) -> Daemon:
        assert self.cluster.manager is not None
        return self.cluster.manager

    @property
    def both(self) -> str:
        return f"{self.a.address},{self.b.address}"

    def start_node(self, node_id: int) -> None:
        """A node told of both managers, up in both managers' status."""
        self.cluster.start_node(node_id, True, self.both)
        wait_up_in(self.b.address, node_id)


def wait_up_in(address: str, node_id: int, timeout: float = 15.0) -> None:
    """Poll the manager at ``address`` until it has node ``node_id`` up."""

    async def up() -> bool:
        async with Client(address) as client:
            return any(node.id == node_id and node.up for node in (await client.status()).nodes)

    deadline = time.monotonic() + timeout
    while not _in_a_thread(up):
        assert time.monotonic() < deadline, f"node {node_id} not up at {address} within {timeout:g} s"
        time.sleep(0.05)


def _in_a_thread(work: Callable[[], Coroutine[None, None, bool]]) -> bool:
    """Run ``work`` on an event loop of its own, in a thread, so that async tests (inside a loop) can call it too."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: aio.run(work())).result()


@pytest.fixture
def managers(tmp_path: Path, postgres_url: PostgresURL) -> Iterator[TwoManagers]:
    cluster = LocalCluster(tmp_path)
    b: Daemon | None = None
    try:
        cluster.start_manager("--db", postgres_url.url)
        b = start_daemon(
            ["manager", "--port", "0", "--db", postgres_url.url, "--node-timeout", "1.0"],
            tmp_path,
            tmp_path / "manager-b.log",
        )
        yield TwoManagers(cluster, b, postgres_url)
    finally:
        cluster.stop()
        if b is not None:
            b.kill()


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
    managers.cluster.wait_for(lambda status: [n.id for n in status.nodes if n.up] == [100], "node 100 up at A")


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
    result = run_tool("dfsd", "status", "--json", manager=managers.both)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["managers"]
    assert sorted(manager["address"] for manager in listed) == sorted([managers.a.address, managers.b.address])
    assert all(manager["up"] and manager["database"] == str(managers.url) for manager in listed), listed
    assert sum(manager["coordinator"] for manager in listed) == 1, listed
    table = run_tool("dfsd", "status", manager=managers.both).stdout.decode().splitlines()
    header = table.index(next(line for line in table if line.startswith("MANAGER")))
    assert table[header].split() == ["MANAGER", "STATE", "ROLE", "DATABASE"]
    rows = [line.split() for line in table[header + 1 :]]
    assert sorted(row[0] for row in rows) == sorted([managers.a.address, managers.b.address])
    assert sorted(row[2] for row in rows) == ["-", "coordinator"]

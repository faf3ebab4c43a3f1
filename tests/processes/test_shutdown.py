"""Clean shutdown: SIGTERM lets requests in flight finish within the grace period, then cuts them off leaving nothing
half-written; a storage node leaves the manager on its way out."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import ServersUnavailable
from harness import LocalCluster, stalled

from dfsd.client import Client


@pytest.fixture
def graceful_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--grace", "1")
        for node_id in (100, 101):
            cluster.start_node(node_id)
        yield cluster
    finally:
        cluster.stop()


async def test_sigterm_cuts_off_an_upload_that_outlasts_the_grace_period(graceful_cluster: LocalCluster) -> None:
    cluster = graceful_cluster
    stop = asyncio.Event()
    async with Client(cluster.address) as client:
        await client.put("kept", b"acknowledged before the signal")
        upload = asyncio.ensure_future(client.put("cut-off", stalled(os.urandom(1_000_000), stop)))
        await cluster.until_partial()
        assert cluster.manager is not None
        started = time.monotonic()
        os.kill(cluster.manager.pid, signal.SIGTERM)
        assert await asyncio.to_thread(cluster.manager.process.wait, 10) == 0
        assert time.monotonic() - started < 5  # the 1 s grace, not forever
        with pytest.raises(ServersUnavailable):
            await upload
        stop.set()
    await asyncio.to_thread(cluster.start_manager)
    await asyncio.to_thread(cluster.wait_for, lambda s: all(n.up for n in s.nodes), "nodes back")
    await asyncio.to_thread(cluster.wait_no_orphans)
    async with Client(cluster.address) as client:
        assert [info.name async for info in client.list()] == ["kept"]


async def test_sigterm_lets_an_upload_in_flight_finish(graceful_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = graceful_cluster
    assert cluster.manager is not None
    cluster.manager.kill()
    cluster.start_manager("--grace", "10")
    cluster.wait_for(lambda s: all(n.up for n in s.nodes), "nodes back")
    signalled = asyncio.Event()

    async def slow():  # type: ignore[no-untyped-def]
        yield b"first half, "
        await signalled.wait()
        await asyncio.sleep(0.5)
        yield b"second half"

    async with Client(cluster.address) as client:
        upload = asyncio.ensure_future(client.put("finished", slow()))
        await cluster.until_partial()
        assert cluster.manager is not None
        os.kill(cluster.manager.pid, signal.SIGTERM)
        signalled.set()
        stored = await upload
        assert stored.size == len(b"first half, second half")
        assert await asyncio.to_thread(cluster.manager.process.wait, 15) == 0
    cluster.start_manager()
    cluster.wait_for(lambda s: all(n.up for n in s.nodes), "nodes back")
    async with Client(cluster.address) as client:
        assert await client.read("finished") == b"first half, second half"


def test_a_stopping_node_leaves_the_manager_at_once(graceful_cluster: LocalCluster) -> None:
    cluster = graceful_cluster
    node = cluster.nodes[101]
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(10) == 0
    cluster.wait_node_down(101)
    log = node.log.read_text()
    assert "deregistered" in log and "stopped" in log
    manager_log = (cluster.root / "manager.log").read_text()
    assert "node_down" in manager_log and "no heartbeat" not in manager_log  # it left; it did not time out

"""Integrity: scrubbing finds bytes that rotted on disk, and a full disk refuses a file cleanly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import StorageFull
from harness import LocalCluster, run_tool, small_tmpfs

from dfsd.client import Client


async def test_scrub_reports_corrupt_and_missing_files(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for index in range(30):
            await client.put(f"scrub/{index}", os.urandom(10_000))
        clean = run_tool("dfsd", "scrub", manager=cluster.address)
        assert clean.returncode == 0, clean.stderr
        assert "checked 30 files" in clean.stdout.decode() and "0 corrupt, 0 missing" in clean.stdout.decode()

        rotten, gone = sorted(cluster.stored_files(100))[:2]
        data = bytearray(rotten.read_bytes())
        data[5000] ^= 0x01  # one flipped bit
        rotten.write_bytes(bytes(data))
        gone.unlink()
        report = run_tool("dfsd", "scrub", manager=cluster.address)
        output = report.stdout.decode()
        assert report.returncode == 7, output + report.stderr.decode()
        assert "1 corrupt, 1 missing" in output
        assert output.count("CORRUPT") == 1 and output.count("MISSING") == 1
        status = await client.status()
        assert status.lost is not None and len(status.lost) == 1


async def _free_on(client: Client, node_id: int) -> int:
    """The free bytes the manager last heard of from one node."""
    return next(node.free for node in (await client.status()).nodes if node.id == node_id)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs for one node's data directory (needs root; skipped otherwise)."""
    with small_tmpfs(tmp_path / "node-100", "8m") as mount_point:
        yield mount_point


async def test_a_full_disk_refuses_the_file_and_is_passed_over_until_it_has_room(
    tmp_path: Path, small_disk: Path
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--no-auto-rebalance")
        cluster.start_node(100)  # on the 8 MiB disk
        async with Client(cluster.address) as client:
            await client.put("two-mib", os.urandom(2 * 1024 * 1024))

            async def twenty_mib():  # type: ignore[no-untyped-def]
                for _ in range(20):  # unknown size: the manager cannot see it will not fit
                    yield os.urandom(1024 * 1024)

            with pytest.raises(StorageFull):
                await client.put("too-big", twenty_mib())
            assert not any(small_disk.rglob("*.part"))  # nothing half-written stays
            assert [info.name async for info in client.list()] == ["two-mib"]

            await asyncio.to_thread(cluster.start_node, 101)  # a roomy node
            for name in ("a", "b"):
                await client.put(name, b"small")  # 101 catches up: 100 and 101 hold 1 and 2 files
            await client.put("after-full", b"small")
            assert (await client.stat("after-full")).node == 101  # 100 has fewer files, but no room

            full = await _free_on(client, 100)
            await client.delete("two-mib")  # 2 MiB free again on node 100, once its heartbeat reports it
            async with asyncio.timeout(10):
                while await _free_on(client, 100) < full + 1024 * 1024:
                    await asyncio.sleep(0.05)
            await client.put("room-again", b"small")
            assert (await client.stat("room-again")).node == 100
        await asyncio.to_thread(cluster.wait_no_orphans)
    finally:
        cluster.stop()

"""The manager's read cache (``dfsd/manager/read_cache.py``), end to end: a read it answers is the read the node would
have answered. Error 4 for a down node's files and for lost files, error 2 after a delete, the new bytes after a
replace, through this manager or through another sharing the database; ``--read-cache 0`` relays every read.

Each test counts the cache's hits and misses on the manager's metrics, so a read said to come from the cache did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LocalCluster, free_port, scraped

from dfsd.client import Client, FileNotFound, FileUnavailable
from dfsd.manager.store import PostgresURL

NODE = 100


def cache_counts(metrics_port: int) -> dict[str, float]:
    """The read cache's metrics of the manager serving ``metrics_port``: hits, misses, bytes, files, capacity_bytes."""
    return scraped(metrics_port, "dfsd_read_cache_")


class CachedCluster:
    """A manager with metrics (and ``flags``) and one storage node; ``counts()`` reads its read cache's metrics."""

    def __init__(self, root: Path, *flags: str, database: PostgresURL | None = None) -> None:
        self.cluster = LocalCluster(root, database=database)
        self.metrics_port = free_port()
        self.cluster.start_manager("--metrics-port", str(self.metrics_port), *flags)

    def counts(self) -> dict[str, float]:
        return cache_counts(self.metrics_port)


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[CachedCluster]:
    """A manager with the default read cache and one storage node, up."""
    cached = CachedCluster(tmp_path)
    try:
        cached.cluster.start_node(NODE)
        yield cached
    finally:
        cached.cluster.stop()


async def test_a_read_after_an_inline_put_comes_from_the_cache_whole_or_in_part(cached: CachedCluster) -> None:
    data = os.urandom(1024)
    async with Client(cached.cluster.address) as client:
        await client.put("warm", data)
        assert await client.read("warm") == data
        assert await client.read("warm", offset=100, length=200) == data[100:300]
        assert await client.read("warm", offset=1024) == b""
    counts = cached.counts()
    assert (counts["hits"], counts["misses"], counts["files"]) == (3, 0, 1)
    assert 1024 < counts["bytes"] <= counts["capacity_bytes"] == 32 * 1024 * 1024


async def test_a_cold_read_warms_the_cache(cached: CachedCluster) -> None:
    data = os.urandom(5000)
    async with Client(cached.cluster.address) as client:
        await client.put("cold", data)
    assert cached.cluster.manager is not None
    cached.cluster.manager.kill()  # a new manager starts with an empty cache
    cached.cluster.start_manager("--metrics-port", str(cached.metrics_port))
    cached.cluster.wait_for(lambda status: any(node.id == NODE and node.up for node in status.nodes), "node up")
    async with Client(cached.cluster.address) as client:
        assert await client.read("cold") == data  # relayed from the node, and kept
        assert await client.read("cold") == data
    counts = cached.counts()
    assert (counts["hits"], counts["misses"]) == (1, 1)


async def test_a_cached_file_on_a_stopped_node_is_error_4(cached: CachedCluster) -> None:
    data = os.urandom(1024)
    async with Client(cached.cluster.address) as client:
        await client.put("held", data)
        assert await client.read("held") == data
        cached.cluster.nodes[NODE].kill()
        cached.cluster.wait_node_down(NODE)
        with pytest.raises(FileUnavailable, match="down"):
            await client.read("held")
        cached.cluster.start_node(NODE)
        assert await client.read("held") == data
    assert cached.counts()["hits"] == 2  # before the node stopped and after it came back; never while it was down


async def test_a_cached_file_marked_lost_is_error_4(cached: CachedCluster) -> None:
    data = os.urandom(1024)
    async with Client(cached.cluster.address) as client:
        await client.put("lost", data)
        assert await client.read("lost") == data
        cached.cluster.nodes[NODE].kill()
        cached.cluster.wait_node_down(NODE)
        (stored,) = cached.cluster.stored_files(NODE)
        stored.unlink()  # the disk lost the file while its node was down
        cached.cluster.start_node(NODE)
        assert (await client.status()).lost == ["lost"]
        with pytest.raises(FileUnavailable, match="lost"):
            await client.read("lost")
    assert cached.counts()["hits"] == 1


async def test_a_cached_file_deleted_is_error_2_and_its_name_stored_again_reads_the_new_bytes(
    cached: CachedCluster,
) -> None:
    first, second = os.urandom(1024), os.urandom(1024)
    async with Client(cached.cluster.address) as client:
        await client.put("gone", first)
        assert await client.read("gone") == first
        await client.delete("gone")
        with pytest.raises(FileNotFound):
            await client.read("gone")
        await client.put("gone", second)
        assert await client.read("gone") == second
    counts = cached.counts()
    assert (counts["hits"], counts["files"]) == (2, 1)  # the deleted file's bytes left the cache with it


async def test_a_cached_file_replaced_reads_the_new_bytes(cached: CachedCluster) -> None:
    first, second = os.urandom(2048), os.urandom(100)
    async with Client(cached.cluster.address) as client:
        await client.put("swap", first)
        assert await client.read("swap") == first
        await client.put("swap", second, replace=True)
        assert await client.read("swap") == second
        assert (await client.stat("swap")).size == 100
    counts = cached.counts()
    assert (counts["hits"], counts["files"]) == (2, 1)


async def test_files_streamed_past_the_inline_limit_are_not_cached(cached: CachedCluster) -> None:
    data = os.urandom(64 * 1024 + 1)
    async with Client(cached.cluster.address) as client:
        await client.put("big", data)
        assert await client.read("big") == data
        assert await client.read("big") == data
    counts = cached.counts()
    assert (counts["hits"], counts["misses"], counts["files"]) == (0, 0, 0)


async def test_read_cache_0_relays_every_read(tmp_path: Path) -> None:
    cached = CachedCluster(tmp_path, "--read-cache", "0")
    try:
        cached.cluster.start_node(NODE)
        data = os.urandom(1024)
        async with Client(cached.cluster.address) as client:
            await client.put("plain", data)
            assert await client.read("plain") == data
            assert await client.read("plain", offset=10, length=10) == data[10:20]
            cached.cluster.nodes[NODE].kill()
            cached.cluster.wait_node_down(NODE)
            with pytest.raises(FileUnavailable, match="down"):
                await client.read("plain")
        counts = cached.counts()
        assert (counts["hits"], counts["misses"], counts["files"], counts["capacity_bytes"]) == (0, 0, 0, 0)
    finally:
        cached.cluster.stop()


async def test_reads_cached_by_one_manager_see_deletes_and_replaces_through_the_other(
    tmp_path: Path, postgres_url: PostgresURL
) -> None:
    """Two managers on one PostgreSQL database, each with its own cache: the name is looked up in the database on
    every read, so bytes the reader's manager holds for a file the other deleted or replaced are never served."""
    reader = CachedCluster(tmp_path, database=postgres_url)
    cluster = reader.cluster
    try:
        cluster.start_manager(number=1)
        cluster.start_node(NODE)
        files = {f"shared/{index}": os.urandom(700 + index) for index in range(6)}
        async with Client(cluster.address) as near, Client(cluster.managers[1].address) as far:
            for name, data in files.items():
                await near.put(name, data)  # in the reader's cache from the start
                assert await near.read(name) == data
            for index, name in enumerate(files):
                if index % 2:
                    await far.delete(name)
                    with pytest.raises(FileNotFound):
                        await near.read(name)
                else:
                    files[name] = os.urandom(900 + index)
                    await far.put(name, files[name], replace=True)
                    assert await near.read(name) == files[name]
                    assert await near.read(name) == files[name]
        counts = reader.counts()
        assert (counts["hits"], counts["misses"]) == (6 + 3, 3)  # each replacement: relayed once, then cached
    finally:
        cluster.stop()

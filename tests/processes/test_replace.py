"""Atomic replacement (``put`` with ``replace``): the new bytes are stored under a new file id, the name's row switches
to them in one statement, and the old bytes are removed afterwards. Through real processes, and on the store itself on
both backends."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from dfsd.protocol import INLINE_MAX, NameExists
from harness import LocalCluster

from dfsd.client import Client
from dfsd.manager.store import Location, MetadataStore


async def test_put_replace_switches_the_name_and_removes_the_old_bytes(cluster: LocalCluster) -> None:
    old, new = os.urandom(INLINE_MAX + 10), os.urandom(3 * INLINE_MAX)
    async with Client(cluster.address) as client:
        await client.put("obj", old)
        first = await client.stat("obj")
        with pytest.raises(NameExists):
            await client.put("obj", new)
        stored = await client.put("obj", new, replace=True)
        assert (stored.size, stored.sha256) == (len(new), hashlib.sha256(new).digest())
        assert await client.read("obj") == new
        second = await client.stat("obj")
        assert second.sha256 == stored.sha256 and second.created >= first.created
        assert [info.name async for info in client.list("")] == ["obj"]
    cluster.wait_no_orphans()  # the old file's bytes are gone from its node
    assert sum(len(ids) for ids in cluster.records().values()) == 1


async def test_put_replace_of_a_new_name_stores_it(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        await client.put("fresh", b"small", replace=True)
        assert await client.read("fresh") == b"small"
        await client.put("fresh", b"smaller", replace=True)  # inline both ways
        assert await client.read("fresh") == b"smaller"
    cluster.wait_no_orphans()


async def test_concurrent_replaces_all_succeed_and_the_last_commit_wins(cluster: LocalCluster) -> None:
    """Replacements of one name do not exclude each other (as S3's PUTs do not): each succeeds, one of them is what
    the name holds afterwards, whole, and every other version's bytes are removed."""
    versions = [os.urandom(INLINE_MAX + index) for index in range(8)]
    clients = [Client(cluster.address) for _ in versions]
    try:
        await asyncio.gather(*(c.put("race", v, replace=True) for c, v in zip(clients, versions, strict=True)))
        assert await clients[0].read("race") in versions
    finally:
        for client in clients:
            await client.close()
    cluster.wait_no_orphans()


async def test_readers_see_the_old_object_or_the_new_never_a_mix_nor_nothing(cluster: LocalCluster) -> None:
    versions = [bytes([index]) * (2 * 1024 * 1024 + index) for index in range(6)]
    async with Client(cluster.address) as writer, Client(cluster.address) as reader:
        await writer.put("busy", versions[0])
        done = asyncio.Event()
        seen: set[int] = set()

        async def read_until_done() -> None:
            while not done.is_set():
                data = await reader.read("busy")  # never FileNotFound, even as old bytes are removed
                assert data in versions
                seen.add(versions.index(data))

        async def replace_all() -> None:
            try:
                for version in versions[1:]:
                    await writer.put("busy", version, replace=True)
            finally:
                done.set()

        await asyncio.gather(read_until_done(), replace_all())
        assert await reader.read("busy") == versions[-1]
    assert seen
    cluster.wait_no_orphans()


async def test_store_commit_replacing_switches_the_row(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        first = await store.reserve("name", 1)
        await store.commit(first, "name", 1, 3, b"a" * 32, 1.0)
        await store.release("name", first)
        second = await store.reserve("name", 1, replace=True)  # claims no name: a stored file is no obstacle
        third = await store.reserve("name", 1, replace=True)
        assert (await store.uploading()) == {second, third}
        replaced = await store.commit_replacing(second, "name", 2, 5, b"b" * 32, 2.0)
        assert replaced is not None and (replaced.id, replaced.node, replaced.size) == (first, 1, 3)
        replaced = await store.commit_replacing(third, "name", 1, 7, b"c" * 32, 3.0)  # the last commit wins
        assert replaced is not None and replaced.id == second
        current = await store.find("name")
        assert current is not None and (current.id, current.node, current.size, current.lost) == (third, 1, 7, None)
        await store.release("name", second)
        await store.release("name", third)
        assert (await store.uploading()) == set()
        other = await store.reserve("other", 1, replace=True)
        assert await store.commit_replacing(other, "other", 1, 1, b"d" * 32, 4.0) is None
        assert [record.name for record in await store.list_files("", None, 10)] == ["name", "other"]
    finally:
        await store.close()

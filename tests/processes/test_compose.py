"""Composition (``compose``, a multipart upload's completion): stored parts joined, in order, into one normal file on
one storage node, built there from its own disk and straight from the other nodes; committed like a put (replace,
meta), then the parts are deleted. Through real processes."""

from __future__ import annotations

import hashlib
import os

import pytest
from dfsd.protocol import INLINE_MAX, MAX_COMPOSE_PARTS, BadRequest, FileNotFound, NameExists
from harness import LocalCluster

from dfsd.client import Client
from dfsd.manager.store import Location, MetadataStore


async def test_compose_joins_parts_from_every_node_into_one_file(cluster: LocalCluster) -> None:
    parts = [os.urandom(INLINE_MAX * 20 + index) for index in range(6)]
    names = [f".uploads/u1/{index:05}" for index in range(len(parts))]
    async with Client(cluster.address) as client:
        for name, part in zip(names, parts, strict=True):
            await client.put(name, part)
        holders = {(await client.stat(name)).node for name in names}
        assert len(holders) == 3  # placement spread them: the build fetches from the other nodes
        whole = b"".join(parts)
        stored = await client.compose("bucket/big", names, meta={"etag": "abc-6"})
        assert (stored.size, stored.sha256) == (len(whole), hashlib.sha256(whole).digest())
        assert await client.read("bucket/big") == whole
        info = await client.stat("bucket/big")
        assert info.meta == {"etag": "abc-6"} and info.sha256 == stored.sha256
        for name in names:
            with pytest.raises(FileNotFound):
                await client.stat(name)
        assert [entry.name async for entry in client.list("")] == ["bucket/big"]
    cluster.wait_no_orphans()  # the parts' bytes are gone; the composed file is one file on one node
    assert [len(ids) for ids in cluster.records().values() if ids] == [1]
    assert [path.read_bytes() for path in cluster.stored_files(info.node)] == [whole]


async def test_compose_of_small_and_empty_parts(cluster: LocalCluster) -> None:
    parts = [b"", b"a", os.urandom(INLINE_MAX), b"", b"tail"]
    async with Client(cluster.address) as client:
        for index, part in enumerate(parts):
            await client.put(f"p{index}", part)
        await client.compose("small", [f"p{index}" for index in range(len(parts))])
        assert await client.read("small") == b"".join(parts)
    cluster.wait_no_orphans()


async def test_compose_replaces_unless_told_not_to(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        await client.put("obj", b"old object")
        await client.put("part", b"new")
        with pytest.raises(NameExists):
            await client.compose("obj", ["part"], replace=False)
        assert await client.read("part") == b"new"  # a refused compose keeps its parts
        await client.compose("obj", ["part"])
        assert await client.read("obj") == b"new"
    cluster.wait_no_orphans()


async def test_compose_with_a_missing_part_stores_nothing(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        await client.put("kept", b"part one")
        with pytest.raises(FileNotFound):
            await client.compose("obj", ["kept", "absent"])
        with pytest.raises(BadRequest):
            await client.compose("obj", [])
        with pytest.raises(BadRequest):
            await client.compose("obj", ["kept"] * (MAX_COMPOSE_PARTS + 1))
        with pytest.raises(FileNotFound):
            await client.stat("obj")
        assert await client.read("kept") == b"part one"
    cluster.wait_no_orphans()


async def test_store_remove_exact_leaves_a_newer_file_alone(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        first = await store.reserve("n", 1)
        await store.commit(first, "n", 1, 1, bytes(32), 1.0)
        await store.release("n", first)
        second = await store.reserve("n", 1, replace=True)
        await store.commit_replacing(second, "n", 1, 2, bytes(32), 2.0)
        await store.release("n", second)
        assert await store.remove_exact("n", first) is None
        removed = await store.remove_exact("n", second)
        assert removed is not None and removed.size == 2
        assert await store.find("n") is None
    finally:
        await store.close()

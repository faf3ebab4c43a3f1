"""Bucket records in the manager: created once (the second creator learns whether it owns the name), deleted only by
their owner and only while empty, listed and looked up; kept in the metadata store on both backends."""

from __future__ import annotations

import asyncio

import pytest
from dfsd.protocol import MAX_BUCKET_NAME_BYTES, BadRequest
from harness import LocalCluster

from dfsd.client import (
    BucketExists,
    BucketNotEmpty,
    BucketNotYours,
    BucketOwnedByYou,
    Client,
    ErrorCode,
    NoSuchBucket,
)
from dfsd.manager.store import Location, MetadataStore
from dfsd.sync_client import SyncClient


async def test_bucket_lifecycle(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        with pytest.raises(NoSuchBucket):
            await client.bucket("photos")
        created = await client.create_bucket("photos", "alice")
        assert (created.name, created.owner) == ("photos", "alice")
        assert await client.bucket("photos") == created
        with pytest.raises(BucketOwnedByYou) as owned:
            await client.create_bucket("photos", "alice")
        assert owned.value.code == ErrorCode.BUCKET_OWNED_BY_YOU == 12
        with pytest.raises(BucketExists) as taken:
            await client.create_bucket("photos", "bob")
        assert taken.value.code == 13
        await client.create_bucket("docs", "bob")
        assert [(b.name, b.owner) for b in await client.buckets()] == [("docs", "bob"), ("photos", "alice")]

        await client.put("photos/cat.jpg", b"meow")
        await client.put("photosynthesis", b"not in the bucket")  # a name that merely starts with the bucket's
        with pytest.raises(BucketNotYours):
            await client.delete_bucket("photos", "bob")
        with pytest.raises(BucketNotEmpty):
            await client.delete_bucket("photos", "alice")
        await client.delete("photos/cat.jpg")
        await client.delete_bucket("photos", "alice")
        with pytest.raises(NoSuchBucket):
            await client.delete_bucket("photos", "alice")
        assert [b.name for b in await client.buckets()] == ["docs"]
        assert await client.read("photosynthesis") == b"not in the bucket"


async def test_bad_bucket_names_are_refused(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for name in ("", "a/b", "nul\0", "x" * (MAX_BUCKET_NAME_BYTES + 1)):
            with pytest.raises(BadRequest):
                await client.create_bucket(name, "alice")
        with pytest.raises(BadRequest):
            await client.create_bucket("fine", "")
        assert await client.buckets() == []


async def test_concurrent_creates_of_one_bucket_give_one_success(cluster: LocalCluster) -> None:
    clients = [Client(cluster.address) for _ in range(6)]
    try:
        results = await asyncio.gather(
            *(c.create_bucket("race", f"user{i}") for i, c in enumerate(clients)), return_exceptions=True
        )
    finally:
        for client in clients:
            await client.close()
    assert sum(not isinstance(result, Exception) for result in results) == 1
    assert all(isinstance(result, BucketExists) for result in results if isinstance(result, Exception))


def test_buckets_survive_a_manager_restart(cluster: LocalCluster) -> None:
    with SyncClient(cluster.address) as client:
        created = client.create_bucket("kept", "carol")
    assert cluster.manager is not None
    cluster.manager.terminate()
    cluster.start_manager()
    with SyncClient(cluster.address) as client:
        assert client.bucket("kept") == created
        assert client.buckets() == [created]


async def test_store_buckets(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        assert await store.create_bucket("b", "alice", 1.0)
        assert not await store.create_bucket("b", "bob", 2.0)
        bucket = await store.bucket("b")
        assert bucket is not None and (bucket.owner, bucket.created) == ("alice", 1.0)
        file_id = await store.reserve("b/key", 1)
        await store.commit(file_id, "b/key", 1, 1, bytes(32), 1.0)
        assert not await store.delete_bucket("b", "alice")  # not empty
        assert await store.remove("b/key") is not None
        assert not await store.delete_bucket("b", "bob")  # not bob's
        assert await store.delete_bucket("b", "alice")
        assert await store.buckets() == []
    finally:
        await store.close()

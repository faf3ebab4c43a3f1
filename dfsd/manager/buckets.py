"""Bucket records: create, delete, look up and list the buckets a gateway serves.

A bucket is a record (name, owner, created) in the metadata store; its objects are the ordinary files named
``BUCKET/KEY``, so the CBOR tools see them too. The manager keeps the records and their two rules, which must hold
whichever gateway asks: a name is created once (the second creator is told whether it already owns it), and a bucket
is deleted only by its owner and only while no file name starts with ``BUCKET/`` — checked in the very statement that
deletes it, so a file committed meanwhile keeps the bucket. Who may call himself an owner is the gateway's business
(it authenticates its users); the manager takes the owner's name as given.
"""

from __future__ import annotations

import time

from ..protocol import (
    MAX_BUCKETS,
    BadRequest,
    BucketExists,
    BucketNotEmpty,
    BucketNotYours,
    BucketOwnedByYou,
    NoSuchBucket,
    check_bucket,
)
from ..protocol.messages import Bucket, BucketInfo, Buckets, CreateBucket, DeleteBucket, ListBuckets, Ok, StatBucket
from ..service import Request
from ..wire import Connection
from .store import MetadataStore


class BucketOperations:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def handle_create_bucket(self, conn: Connection, request: CreateBucket, req: Request) -> None:
        check_bucket(request.name, request.owner)
        req.fields.update(bucket=request.name)
        created = time.time()
        if not await self.store.create_bucket(request.name, request.owner, created):
            existing = await self.store.bucket(request.name)
            if existing is None:
                raise BadRequest(f"bad request: the cluster holds {MAX_BUCKETS} buckets, the most it may; delete one")
            if existing.owner == request.owner:
                raise BucketOwnedByYou(f"the bucket {request.name!r} already exists, and it is yours")
            raise BucketExists(
                f"the bucket {request.name!r} already exists, and belongs to another owner; choose another name"
            )
        await conn.send(Bucket(BucketInfo(request.name, request.owner, created)))

    async def handle_delete_bucket(self, conn: Connection, request: DeleteBucket, req: Request) -> None:
        req.fields.update(bucket=request.name)
        if not await self.store.delete_bucket(request.name, request.owner):
            existing = await self._find(request.name)
            if existing.owner != request.owner:
                raise BucketNotYours(f"the bucket {request.name!r} belongs to another owner")
            raise BucketNotEmpty(
                f"the bucket {request.name!r} is not empty: delete the files whose names start with "
                f"{request.name + '/'!r} first"
            )
        await conn.send(Ok())

    async def handle_stat_bucket(self, conn: Connection, request: StatBucket, req: Request) -> None:
        req.fields.update(bucket=request.name)
        await conn.send(Bucket(await self._find(request.name)))

    async def handle_list_buckets(self, conn: Connection, request: ListBuckets, req: Request) -> None:
        buckets = await self.store.buckets()
        req.fields.update(count=len(buckets))
        await conn.send(Buckets(buckets))

    async def _find(self, name: str) -> BucketInfo:
        bucket = await self.store.bucket(name)
        if bucket is None:
            raise NoSuchBucket(f"no such bucket: {name!r}; create it first")
        return bucket

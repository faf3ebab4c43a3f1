"""Object metadata (``put.meta``): kept with the file's row on both backends, given back by stat, list and get (in
``sending``, so a download's headers come with its bytes), bounded in size."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable

import pytest
from dfsd.protocol import INLINE_MAX, MAX_LISTING_BYTES, MAX_META_BYTES, BadRequest, FileNotFound, NameExists
from dfsd.protocol.messages import Error, List, Listing, Put, Stat
from harness import LocalCluster

from dfsd.client import Client
from dfsd.manager.store import Location, MetadataStore
from dfsd.wire import Connection

META = {"content-type": "text/plain; charset=utf-8", "x-amz-meta-colour": "grün", "etag": "0" * 32}


@pytest.mark.parametrize("size", [5, INLINE_MAX + 1])
async def test_meta_comes_back_from_stat_list_and_get(cluster: LocalCluster, size: int) -> None:
    payload = os.urandom(size)
    async with Client(cluster.address) as client:
        await client.put("with/meta", payload, meta=META)
        await client.put("with/none", b"plain")
        assert (await client.stat("with/meta")).meta == META
        assert (await client.stat("with/none")).meta is None
        assert {info.name: info.meta async for info in client.list("with/")} == {"with/meta": META, "with/none": None}
        download = await client.get("with/meta")
        assert download.info.meta == META
        assert b"".join([bytes(chunk) async for chunk in download]) == payload
        ranged = await client.get("with/meta", offset=1, length=2)
        assert ranged.info.meta == META  # a ranged read's headers too
        assert b"".join([bytes(chunk) async for chunk in ranged]) == payload[1:3]


async def test_replace_carries_the_new_meta(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        await client.put("obj", b"one", meta={"a": "1"})
        await client.put("obj", b"two", replace=True, meta={"b": "2"})
        assert (await client.stat("obj")).meta == {"b": "2"}
        await client.put("obj", b"three", replace=True)
        assert (await client.stat("obj")).meta is None


async def test_a_repeated_put_is_already_stored_only_with_the_same_meta(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        first = await client.put("same", b"bytes", meta={"k": "v"})
        again = await client.put("same", b"bytes", sha256=first.sha256, meta={"k": "v"})
        assert again.already
        with pytest.raises(NameExists):  # other metadata: not the same file, so the name is taken
            await client.put("same", b"bytes", sha256=first.sha256, meta={"k": "w"})


async def test_meta_over_the_limit_is_refused_before_any_byte_moves(cluster: LocalCluster) -> None:
    big = {"x": "y" * MAX_META_BYTES}
    async with Client(cluster.address) as client:
        with pytest.raises(BadRequest, match="metadata"):
            await client.put("big", b"data", meta=big)  # the client refuses it itself
    host, port = cluster.address.rsplit(":", 1)
    conn = await Connection.open(host, int(port), role="client")
    try:
        await conn.send(Put("big", meta=big))  # and so does the manager, before its ok
        answer = await conn.recv()
        assert isinstance(answer, Error) and answer.code == 5 and "metadata" in answer.message
        await conn.send(Stat("big"))
        assert isinstance(await conn.recv(), Error)  # nothing was kept, and the connection is in step
        await conn.send(Put("fits", meta={"x": "y" * (MAX_META_BYTES - 1)}, data=b"ok"))
        assert type(await conn.recv()).__name__ == "Stored"
    finally:
        await conn.close()


@pytest.mark.parametrize("size", [5, INLINE_MAX + 1])
async def test_meta_after_is_kept_with_meta_whether_sent_whole_or_streamed(cluster: LocalCluster, size: int) -> None:
    """``meta_after`` (metadata known only once the source is read, like its MD5) goes out in the stream's ``end``,
    or inside the ``put`` of a file small enough to be sent whole; either way it is kept beside ``meta``."""
    payload = os.urandom(size)

    def hashed_source() -> tuple[AsyncIterator[bytes], Callable[[], dict[str, str]]]:
        """A source and the MD5 of what it has given, known once it is read."""
        read = hashlib.md5()

        async def source() -> AsyncIterator[bytes]:
            read.update(payload)
            yield payload

        return source(), lambda: {"md5": read.hexdigest()}

    async with Client(cluster.address) as client:
        source, md5_after = hashed_source()
        await client.put("late", source, size=size, meta={"a": "1"}, meta_after=md5_after)
        source, md5_after = hashed_source()
        await client.put("late/unsized", source, meta_after=md5_after)
        md5 = hashlib.md5(payload).hexdigest()
        assert (await client.stat("late")).meta == {"a": "1", "md5": md5}
        assert (await client.stat("late/unsized")).meta == {"md5": md5}


async def test_end_meta_over_the_limit_is_refused_and_keeps_nothing(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        with pytest.raises(BadRequest, match="metadata"):
            await client.put("late/big", os.urandom(INLINE_MAX + 1), meta_after=lambda: {"x": "y" * MAX_META_BYTES})
        with pytest.raises(FileNotFound):
            await client.stat("late/big")
        await client.put("late/next", b"the connection is still in step")


async def test_store_keeps_meta_through_commit_replace_and_reopen(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        file_id = await store.reserve("m", 1)
        await store.commit(file_id, "m", 1, 1, bytes(32), 1.0, {"ü": "ß", "empty": ""})
        await store.release("m", file_id)
        record = await store.find("m")
        assert record is not None and record.meta == {"ü": "ß", "empty": ""}
        replacement = await store.reserve("m", 1, replace=True)
        await store.commit_replacing(replacement, "m", 1, 1, bytes(32), 2.0, {"new": "1"})
        await store.release("m", replacement)
    finally:
        await store.close()
    store = await MetadataStore.open(db_location)
    try:
        [listed] = await store.list_files("", None, 10)
        assert listed.meta == {"new": "1"}
    finally:
        await store.close()


async def test_a_listing_page_of_large_meta_ends_early_to_fit_a_frame(cluster: LocalCluster) -> None:
    """1000 files with the most metadata would not fit one frame: the manager ends the page at MAX_LISTING_BYTES
    and says ``more``; paging with ``after`` still gives every file once."""
    meta = {"m": "v" * (MAX_META_BYTES - 1)}
    count = MAX_LISTING_BYTES // MAX_META_BYTES + 10
    async with Client(cluster.address) as client:
        for index in range(count):
            await client.put(f"f{index:04}", b"", meta=meta)
        assert [info.name async for info in client.list("")] == [f"f{index:04}" for index in range(count)]
    host, port = cluster.address.rsplit(":", 1)
    conn = await Connection.open(host, int(port), role="client")
    try:
        await conn.send(List(""))
        page = await conn.recv()
        assert isinstance(page, Listing) and page.more and 0 < len(page.files) < count
    finally:
        await conn.close()

"""Uploads, downloads, deletes and listings through a real manager and real storage nodes, checked byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dfsd.protocol import (
    INLINE_MAX,
    REMOVE_BATCH,
    BadRequest,
    ChecksumMismatch,
    FileNotFound,
    NameExists,
    error_from_wire,
)
from dfsd.protocol.messages import End, Error, Get, Put, Sending, Stat, Stored
from harness import LocalCluster, stalled

import dfsd.client
from dfsd.bulk import BATCH_BYTES
from dfsd.client import Client
from dfsd.sync_client import SyncClient
from dfsd.wire import Connection


@pytest.mark.parametrize("size", [0, 1, 1000, INLINE_MAX, INLINE_MAX + 1, 1024 * 1024, 3 * 1024 * 1024 + 17])
async def test_round_trip_is_byte_exact(cluster: LocalCluster, size: int) -> None:
    payload = os.urandom(size)
    async with Client(cluster.address) as client:
        stored = await client.put("file.bin", payload)
        assert stored.size == size
        assert stored.sha256 == hashlib.sha256(payload).digest()
        assert await client.read("file.bin") == payload
        info = await client.stat("file.bin")
    assert (info.size, info.sha256, info.available) == (size, stored.sha256, True)
    on_disk = cluster.stored_files(info.node)
    assert [path.read_bytes() for path in on_disk] == [payload]


async def _pieces(payload: bytes) -> AsyncIterator[bytes]:
    """``payload`` as a stream of pieces, as a gateway passes a request body on."""
    for start in range(0, len(payload), 300_000):
        yield payload[start : start + 300_000]
    if not payload:
        yield b""


def _counting_sha256(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The SHA-256 hashers the client library makes from now on (its ``hashlib``, counting them)."""
    made: list[object] = []

    def sha256(*data: bytes) -> Any:
        made.append(hasher := hashlib.sha256(*data))
        return hasher

    monkeypatch.setattr(dfsd.client, "hashlib", SimpleNamespace(sha256=sha256, md5=hashlib.md5))
    return made


@pytest.mark.parametrize("size", [5, INLINE_MAX + 1, 3 * 1024 * 1024 + 17])
async def test_a_source_that_says_its_sha256_is_not_hashed_again(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """``put(..., sha256_after=...)``: a source that hashes its own bytes (the gateway checking a signed payload)
    says their SHA-256 once it has ended; the client library sends that as the upload's checksum and makes no
    SHA-256 of its own, and the file is stored and reads back whole, sent whole or streamed."""
    payload = os.urandom(size)
    made = _counting_sha256(monkeypatch)
    async with Client(cluster.address) as client:
        stored = await client.put("said.bin", _pieces(payload), sha256_after=lambda: hashlib.sha256(payload).digest())
        assert made == []
        assert stored.sha256 == hashlib.sha256(payload).digest()
        assert await client.read("said.bin") == payload


@pytest.mark.parametrize("size", [5, INLINE_MAX + 1, 3 * 1024 * 1024 + 17])
async def test_a_wrong_sha256_after_is_refused_and_keeps_nothing(cluster: LocalCluster, size: int) -> None:
    """The digest a source says is checked by the node like any other: a wrong one stores nothing, and the name and
    the connection are free for the next upload."""
    payload = os.urandom(size)
    wrong: Callable[[], bytes] = lambda: hashlib.sha256(payload + b"!").digest()  # noqa: E731
    async with Client(cluster.address) as client:
        with pytest.raises(ChecksumMismatch):
            await client.put("said.bin", _pieces(payload), sha256_after=wrong)
        with pytest.raises(FileNotFound):
            await client.stat("said.bin")
        assert [path for node_id in cluster.nodes for path in cluster.stored_files(node_id)] == []
        await client.put("said.bin", payload)
        assert await client.read("said.bin") == payload


async def test_a_file_of_several_batches_round_trips_between_files(cluster: LocalCluster, tmp_path: Path) -> None:
    """Larger than two of the batches in which the client reads and saves files and the node writes them, each in a
    thread (``bulk.BATCH_BYTES``): read from a path, saved to a path and to a file object."""
    payload = os.urandom(2 * BATCH_BYTES + 5)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    in_memory = io.BytesIO()
    async with Client(cluster.address) as client:
        stored = await client.put("batches.bin", source)
        assert (stored.size, stored.sha256) == (len(payload), hashlib.sha256(payload).digest())
        await client.get_file("batches.bin", tmp_path / "copy.bin")
        await client.get_file("batches.bin", in_memory)
        info = await client.stat("batches.bin")
    assert (tmp_path / "copy.bin").read_bytes() == payload
    assert in_memory.getvalue() == payload
    assert [path.read_bytes() for path in cluster.stored_files(info.node)] == [payload]


async def test_large_downloads_one_after_another_and_at_once_are_byte_exact(cluster: LocalCluster) -> None:
    """A node reads large files into buffers it uses again once their frames are sent (``storage.buffers``): files of
    several batches, each of other bytes, read back one after another and then all at once, come back as they went."""
    payloads = [os.urandom(9 * 1024 * 1024 + 1 + index) for index in range(3)]
    async with Client(cluster.address) as client:
        for index, payload in enumerate(payloads):
            await client.put(f"large-{index}.bin", payload)
        for index, payload in enumerate(payloads):
            assert await client.read(f"large-{index}.bin") == payload
    clients = [Client(cluster.address) for _ in payloads]
    try:
        read = await asyncio.gather(*(c.read(f"large-{index}.bin") for index, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert read == payloads


async def test_one_large_file_downloaded_by_several_clients_at_once_is_byte_exact_repro(cluster: LocalCluster) -> None:
    """Four downloads of one file at once, each reader pausing between chunks so that the node's read buffers are
    given back while others still send the same chunk: a node took a free buffer out of its kept ones by its bytes,
    not by identity, and handed a buffer still being sent to the next download (wrong bytes: failed 3 runs of 3)."""
    payload = os.urandom(16 * BATCH_BYTES + 7)

    async def download(client: Client) -> bytes:
        pieces = []
        async for chunk in await client.get("shared.bin"):
            pieces.append(bytes(chunk))
            await asyncio.sleep(0.001)
        return b"".join(pieces)

    async with Client(cluster.address) as client:
        await client.put("shared.bin", payload)
    clients = [Client(cluster.address) for _ in range(4)]
    try:
        read = await asyncio.gather(*(download(c) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert read == [payload] * 4


async def test_ranged_reads(cluster: LocalCluster) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 5)
    async with Client(cluster.address) as client:
        await client.put("ranged", payload)
        assert await client.read("ranged", offset=10, length=100) == payload[10:110]
        assert await client.read("ranged", offset=1024 * 1024 - 3) == payload[1024 * 1024 - 3 :]
        assert await client.read("ranged", offset=len(payload)) == b""
        with pytest.raises(BadRequest):
            await client.read("ranged", offset=len(payload) - 1, length=2)
        # the connection is still usable after an error answer
        assert await client.read("ranged", length=3) == payload[:3]


async def test_small_files_travel_inside_one_frame_each_way(cluster: LocalCluster) -> None:
    """``put`` with ``data`` is answered by ``stored`` alone, a small ``get`` by a ``sending`` holding the bytes; a
    wrong size, a wrong checksum or too many inline bytes are refused and leave nothing behind; the connection stays in
    step after each answer."""
    host, port = cluster.address.rsplit(":", 1)
    conn = await Connection.open(host, int(port), role="client")

    async def ask(request: Put | Get | Stat) -> object:
        await conn.send(request)
        answer = await conn.recv()
        return error_from_wire(answer.code, answer.message) if isinstance(answer, Error) else answer

    try:
        refused = await ask(Put("small", size=4, data=b"abc"))
        assert isinstance(refused, BadRequest) and "3 bytes inline, 4 were announced" in refused.message
        assert isinstance(await ask(Put("small", data=b"x" * (INLINE_MAX + 1))), BadRequest)
        assert isinstance(await ask(Put("small", sha256=b"\0" * 32, data=b"abc")), ChecksumMismatch)
        assert isinstance(await ask(Stat("small")), FileNotFound)
        stored = await ask(Put("small", data=b"abc"))
        assert stored == Stored(3, hashlib.sha256(b"abc").digest())
        sending = await ask(Get("small", 1))
        assert isinstance(sending, Sending) and (sending.length, sending.data) == (2, b"bc")
        assert isinstance(await ask(Put("small", data=b"again")), NameExists)
        big = os.urandom(INLINE_MAX + 1)
        async with Client(cluster.address) as client:
            await client.put("big", big)
        sending = await ask(Get("big", 1, INLINE_MAX))  # a small range of a big file comes inline too
        assert isinstance(sending, Sending) and sending.data == big[1:]
        sending = await ask(Get("big"))
        assert isinstance(sending, Sending) and sending.data is None  # one byte more: a stream follows
        streamed = b""
        while not isinstance(message := await conn.recv(), End):
            streamed += bytes(message.data)  # type: ignore[attr-defined]
        assert streamed == big
    finally:
        await conn.close()
    held = sorted(path.read_bytes() for node in cluster.nodes for path in cluster.stored_files(node))
    assert held == sorted([b"abc", big])


async def test_a_download_hands_over_inline_bytes_whole_and_a_stream_as_none(cluster: LocalCluster) -> None:
    """``Download.inline``: a file that came inside the answer is its bytes (checked), a streamed one is None and
    still reads whole by iterating; the client's connection serves the next request either way."""
    small, big = os.urandom(INLINE_MAX), os.urandom(INLINE_MAX + 1)
    async with Client(cluster.address) as client:
        await client.put("small", small)
        await client.put("big", big)
        assert (await client.get("small")).inline() == small
        streamed = await client.get("big")
        assert streamed.inline() is None
        assert b"".join([bytes(chunk) async for chunk in streamed]) == big
        assert (await client.get("big", offset=1, length=10)).inline() == big[1:11]  # a range: no checksum to check
        assert await client.read("small") == small


async def test_three_hundred_files_spread_evenly(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for index in range(300):
            await client.put(f"even/{index}", f"file {index}".encode())
        placed = Counter([info.node async for info in client.list("even/")])
    assert placed == {100: 100, 101: 100, 102: 100}
    assert {node_id: len(cluster.stored_files(node_id)) for node_id in (100, 101, 102)} == placed


async def test_concurrent_uploads_spread_evenly_and_list_in_pages(cluster: LocalCluster) -> None:
    """Thousands of files: no directory on any node holds more than 36 entries, and listings page correctly."""
    count = 3000
    names = [f"many/{index:05d}" for index in range(count)]

    async def upload(worker: int) -> None:
        async with Client(cluster.address) as client:
            for name in names[worker::16]:
                await client.put(name, name.encode())

    await asyncio.gather(*(upload(worker) for worker in range(16)))
    for node_id in cluster.nodes:
        for directory in [cluster.data_dir(node_id), *cluster.data_dir(node_id).rglob("*")]:
            if directory.is_dir():
                assert len(os.listdir(directory)) <= 36, directory
    async with Client(cluster.address) as client:
        listed = [info async for info in client.list("many/")]
        assert [info.name for info in listed] == names
        assert Counter(info.node for info in listed) == {100: 1000, 101: 1000, 102: 1000}
        assert await client.read("many/02999") == b"many/02999"


async def test_delete_frees_the_name_and_the_bytes(cluster: LocalCluster) -> None:
    """The name is free as soon as the delete is answered; the bytes leave the node just after (PROTOCOL.md 6.4)."""
    async with Client(cluster.address) as client:
        await client.put("doomed", b"x" * 100)
        node = (await client.stat("doomed")).node
        assert len(cluster.stored_files(node)) == 1
        await client.delete("doomed")
        await asyncio.to_thread(cluster.wait_no_orphans)
        assert cluster.stored_files(node) == []
        with pytest.raises(FileNotFound):
            await client.stat("doomed")
        with pytest.raises(FileNotFound):
            await client.delete("doomed")
        await client.put("doomed", b"again")
        assert await client.read("doomed") == b"again"


async def test_deletes_faster_than_their_removals_leave_no_copy_behind(cluster: LocalCluster) -> None:
    """Deletes answered faster than the nodes are asked to remove the bytes reach them in batches (a ``remove``
    naming several ids, at most REMOVE_BATCH): every copy goes, and no node is asked for more in one request."""
    names = [f"batch/{index}" for index in range(3 * REMOVE_BATCH)]
    clients = [Client(cluster.address) for _ in range(8)]
    for client in clients:
        await client.__aenter__()
    try:
        for put in (True, False):

            async def share(k: int, put: bool = put) -> None:
                for name in names[k::8]:
                    await (clients[k].put(name, b"bytes") if put else clients[k].delete(name))

            await asyncio.gather(*(share(k) for k in range(8)))
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    await asyncio.to_thread(cluster.wait_no_orphans)

    def removals() -> list[dict[str, Any]]:
        return [line for node_id in cluster.nodes for line in _requests(cluster.root / f"node-{node_id}.log", "remove")]

    deadline = time.monotonic() + 15  # a node logs a request once it has answered it: the last line may follow
    while sum(line["count"] for line in removals()) < len(names) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sum(line["count"] for line in removals()) == len(names)
    assert max(line["count"] for line in removals()) <= REMOVE_BATCH


def _requests(log: Path, op: str) -> list[dict[str, Any]]:
    """The request lines of ``op`` in a daemon's JSON log."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("op") == op]


HOSTILE_NAMES = [
    "../../etc/passwd",
    "/absolute/path",
    "with spaces and\ttabs",
    "line\nbreak",
    "日本語のファイル名",
    "émigré ünïcødé",
    "..",
    ".",
    "a" * 1088,
    "🙂" * 272,
    "back\\slash",
]


async def test_hostile_names_round_trip_and_never_touch_the_disk(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for index, name in enumerate(HOSTILE_NAMES):
            await client.put(name, f"content {index}".encode())
        for index, name in enumerate(HOSTILE_NAMES):
            assert await client.read(name) == f"content {index}".encode()
        assert sorted(HOSTILE_NAMES) == [info.name async for info in client.list()]
    assert not (cluster.root.parent / "etc").exists()
    for path in cluster.all_entries():
        assert path.resolve().is_relative_to(cluster.root)
        assert "passwd" not in path.name and " " not in path.name


@pytest.mark.parametrize("name", ["", "a" * 1089, "🙂" * 273, "nul\x00byte"])
async def test_bad_names_are_refused(cluster: LocalCluster, name: str) -> None:
    async with Client(cluster.address) as client:
        with pytest.raises(BadRequest):
            await client.put(name, b"data")


async def test_racing_uploads_of_one_name_one_wins(cluster: LocalCluster) -> None:
    for round_ in range(10):
        name = f"race-{round_}"

        async def upload(payload: bytes, name: str = name) -> bytes | Exception:
            try:
                async with Client(cluster.address) as client:
                    await client.put(name, payload)
                return payload
            except NameExists as err:
                return err

        results = await asyncio.gather(upload(b"a" * 200_000), upload(b"b" * 200_000))
        winners = [result for result in results if isinstance(result, bytes)]
        assert len(winners) == 1, results
        assert sum(isinstance(result, NameExists) for result in results) == 1
        async with Client(cluster.address) as client:
            assert await client.read(name) == winners[0]


async def test_a_slow_upload_does_not_stall_other_clients(cluster: LocalCluster) -> None:
    release = asyncio.Event()

    async with Client(cluster.address) as slow, Client(cluster.address) as fast:
        slow_upload = asyncio.ensure_future(slow.put("slow", stalled(b"first", release)))
        async with asyncio.timeout(20):
            for index in range(50):
                await fast.put(f"fast-{index}", b"quick")
                assert await fast.read(f"fast-{index}") == b"quick"
        release.set()
        await slow_upload
        assert await fast.read("slow") == b"first and the rest"


def test_sync_client(cluster: LocalCluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(100_000))
    with SyncClient(cluster.address) as client:
        client.put("sync.bin", source)
        client.get_file("sync.bin", tmp_path / "copy.bin")
        assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
        assert [info.name for info in client.list()] == ["sync.bin"]
        assert client.stat("sync.bin").size == 100_000
        client.delete("sync.bin")
        assert list(client.list()) == []

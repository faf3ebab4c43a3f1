"""Crashes, vanished peers and garbage: acknowledged files survive, unacknowledged ones leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from dfsd.protocol import (
    ChecksumMismatch,
    DfsError,
    FileNotFound,
    FileUnavailable,
    NameExists,
    ServersUnavailable,
    decode_body,
)
from dfsd.protocol.messages import Data, End, Error, Put
from harness import LocalCluster, stalled, start_daemon

from dfsd.client import Client
from dfsd.manager.pool import NodeConnections, remove_copies
from dfsd.manager.topology import NodeState
from dfsd.settings import Security
from dfsd.storage.disk import DIRECT_MIN
from dfsd.transfer import send_upload
from dfsd.wire import Connection


async def read_all(cluster: LocalCluster, files: dict[str, bytes]) -> None:
    async with Client(cluster.address) as client:
        for name, payload in files.items():
            assert await client.read(name) == payload, name


async def test_manager_restart_keeps_every_file(cluster: LocalCluster) -> None:
    files = {f"keep/{index}": os.urandom(index * 1000) for index in range(30)}
    async with Client(cluster.address) as client:
        for name, payload in files.items():
            await client.put(name, payload)
    assert cluster.manager is not None
    cluster.manager.kill()
    cluster.start_manager()  # same port, same database; the nodes find it again by themselves
    cluster.wait_for(lambda status: sum(node.up for node in status.nodes) == 3, "all nodes back")
    await read_all(cluster, files)
    async with Client(cluster.address) as client:
        assert (await client.status()).files == 30
        with pytest.raises(NameExists):  # other bytes: the same ones would be answered "already stored"
            await client.put("keep/0", b"other bytes")


async def test_storage_node_restart_rebuilds_from_its_disk(cluster: LocalCluster) -> None:
    files = {f"node/{index}": os.urandom(5000) for index in range(60)}
    async with Client(cluster.address) as client:
        for name, payload in files.items():
            await client.put(name, payload)
        await client.delete("node/0")
    for node_id in list(cluster.nodes):
        cluster.nodes[node_id].kill()
        cluster.wait_node_down(node_id)
        cluster.start_node(node_id)
    del files["node/0"]
    await read_all(cluster, files)


async def test_node_killed_during_upload_leaves_nothing(cluster: LocalCluster) -> None:
    stop = asyncio.Event()
    async with Client(cluster.address) as client:
        upload = asyncio.ensure_future(client.put("interrupted", stalled(os.urandom(3_000_000), stop)))
        await cluster.until_partial()
        target = next(node_id for node_id in cluster.nodes if cluster.partial_files(node_id))
        cluster.nodes[target].kill()
        with pytest.raises(ServersUnavailable):
            await asyncio.wait_for(upload, 10)
        stop.set()
        # the name is free again, and the upload goes to a node that is up
        await client.put("interrupted", b"second try")
        assert await client.read("interrupted") == b"second try"
    cluster.start_node(target)  # a restarted node clears what a crash left half-written
    assert cluster.partial_files() == []
    assert cluster.stored_files(target) == []


async def test_client_gone_midway_through_a_large_upload_leaves_nothing(cluster: LocalCluster) -> None:
    """A file announced at DIRECT_MIN bytes or more is written around the page cache (O_DIRECT) in stages: a client
    that goes away with half of it sent leaves no byte on any node, and the name is free for the whole file."""
    payload = os.urandom(DIRECT_MIN + 12345)
    async with Client(cluster.address) as client:
        upload = asyncio.ensure_future(
            client.put("large", stalled(payload[: DIRECT_MIN // 2 + 7], asyncio.Event()), size=len(payload))
        )
        await cluster.until_partial()
        async with asyncio.timeout(10):  # until the node has written some of it (a stage, at least)
            while not any(path.stat().st_size for path in cluster.partial_files()):
                await asyncio.sleep(0.01)
        upload.cancel()  # the client drops its connection mid-stream
        with pytest.raises(asyncio.CancelledError):
            await upload
        deadline = time.monotonic() + 10
        while cluster.partial_files() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cluster.partial_files() == []
        assert all(cluster.stored_files(node_id) == [] for node_id in cluster.nodes)
        await client.put("large", payload)
        assert await client.read("large") == payload


async def test_node_killed_amid_concurrent_small_uploads_loses_no_acknowledged_file(
    bare_cluster: LocalCluster,
) -> None:
    """16 clients put small files until their node is killed (kill -9) amid them, many files half-written or
    written but not yet answered: every put answered before is whole after a restart, no other name exists, and no
    byte is left unrecorded."""
    cluster = bare_cluster
    node = cluster.start_node(100)
    acknowledged: dict[str, bytes] = {}
    enough = asyncio.Event()

    async def put_until_refused(client: Client, worker: int) -> None:
        for index in range(10_000):
            name, payload = f"burst/{worker}/{index}", os.urandom(1024 + worker)
            try:
                await client.put(name, payload)
            except DfsError:
                return  # the node is gone: this put was not acknowledged
            acknowledged[name] = payload
            if len(acknowledged) >= 200:
                enough.set()

    clients = [Client(cluster.address) for _ in range(16)]
    for client in clients:
        await client.__aenter__()
    try:
        workers = [asyncio.create_task(put_until_refused(client, k)) for k, client in enumerate(clients)]
        await asyncio.wait_for(enough.wait(), 60)
        node.kill()
        await asyncio.wait_for(asyncio.gather(*workers), 60)
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    cluster.start_node(100)
    await read_all(cluster, acknowledged)
    async with Client(cluster.address) as client:
        assert {info.name async for info in client.list("burst/")} == set(acknowledged)
    cluster.wait_no_orphans()


async def test_client_killed_during_upload_leaves_nothing(cluster: LocalCluster) -> None:
    push = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "dfs-push"),
            "-",
            "--name",
            "half",
            "--manager",
            cluster.address,
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert push.stdin is not None
    push.stdin.write(os.urandom(5_000_000))
    push.stdin.flush()
    await asyncio.sleep(1.0)
    push.kill()
    push.wait()
    async with Client(cluster.address) as client:
        async with asyncio.timeout(10):
            while cluster.partial_files():
                await asyncio.sleep(0.05)
        assert [info async for info in client.list()] == []
        await client.put("half", b"whole")
        assert await client.read("half") == b"whole"


async def test_node_killed_during_download_is_error_4(cluster: LocalCluster) -> None:
    payload = os.urandom(64 * 1024 * 1024)
    async with Client(cluster.address) as client:
        await client.put("big", payload)
        node = (await client.stat("big")).node
        download = await client.get("big")
        chunks = aiter(download)
        await anext(chunks)
        cluster.nodes[node].kill()
        with pytest.raises(FileUnavailable):
            async for _chunk in chunks:
                pass
        with pytest.raises(FileUnavailable):
            await client.read("big")


async def test_wrong_checksum_is_refused_and_leaves_nothing(cluster: LocalCluster) -> None:
    conn = await Connection.open(*cluster.address.split(":"), role="client")  # type: ignore[arg-type]

    async def stream():  # type: ignore[no-untyped-def]
        yield Data(b"the real bytes")
        yield End(hashlib.sha256(b"other bytes").digest())

    with pytest.raises(ChecksumMismatch):
        await send_upload(conn, Put("checked"), stream())
    with pytest.raises(ChecksumMismatch):
        await send_upload(conn, Put("checked", sha256=hashlib.sha256(b"x").digest()), _frames(b"y"))
    await conn.close()
    async with Client(cluster.address) as client:
        assert [info async for info in client.list()] == []
        await client.put("checked", b"the real bytes", sha256=hashlib.sha256(b"the real bytes").digest())
    assert cluster.partial_files() == []
    assert sum(len(cluster.stored_files(node_id)) for node_id in cluster.nodes) == 1


async def _frames(payload: bytes):  # type: ignore[no-untyped-def]
    yield Data(payload)
    yield End()


def raw_exchange(address: str, data: bytes) -> bytes:
    """Send raw bytes to ``address`` and return everything it answers before closing."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # announces a 1.1 GB frame: refused at once
        frame(b"\xff\xff\xff"),  # not CBOR
        frame(b"\xa1\x64type\x64nope"),  # unknown message type
        frame(b"\xa2\x64type\x65hello\x67version\xf5"),  # hello with a bool version
        frame(b"\x81" * 5000 + b"\x00"),  # deep nesting
    ],
)
async def test_garbage_gets_protocol_error_and_harms_nobody(cluster: LocalCluster, garbage: bytes) -> None:
    async with Client(cluster.address) as client:
        await client.put("precious", b"still here")
        answer = await asyncio.to_thread(raw_exchange, cluster.address, garbage)
        message = decode_body(answer[4:])
        assert isinstance(message, Error) and message.code == 6, message
        assert await client.read("precious") == b"still here"
        node = next(iter(cluster.nodes.values()))
        node_answer = await asyncio.to_thread(raw_exchange, node.address, garbage)
        assert isinstance(decode_body(node_answer[4:]), Error)
        assert await client.read("precious") == b"still here"


async def test_frozen_node_goes_down_and_comes_back(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        await client.put("frozen", b"cold")
        node_id = (await client.stat("frozen")).node
        os.kill(cluster.nodes[node_id].pid, signal.SIGSTOP)
        try:
            cluster.wait_node_down(node_id)
            with pytest.raises(FileUnavailable):
                await client.read("frozen")
            await client.put("meanwhile", b"warm")  # goes to a node that is up
        finally:
            os.kill(cluster.nodes[node_id].pid, signal.SIGCONT)
        cluster.wait_for(lambda s: all(n.up for n in s.nodes), "the frozen node back")
        assert await client.read("frozen") == b"cold"


async def test_a_delete_answered_before_its_node_removed_the_bytes_leaves_an_orphan_that_registration_removes(
    cluster: LocalCluster,
) -> None:
    """A delete is answered once the name is gone from the metadata, without waiting for the node (frozen here); the
    manager and the node then crash (kill -9) before the node removes its copy. What is left is an orphan, and the
    node's next registration with the restarted manager removes it."""
    async with Client(cluster.address) as client:
        await client.put("doomed", b"bytes the node keeps for now")
        node_id = (await client.stat("doomed")).node
        file_id = next(iter(cluster.records()[node_id]))
        os.kill(cluster.nodes[node_id].pid, signal.SIGSTOP)
        await client.delete("doomed")
        with pytest.raises(FileNotFound):
            await client.stat("doomed")
    assert cluster.manager is not None
    cluster.manager.kill()
    cluster.nodes[node_id].kill()  # still frozen: it never removed the copy
    assert file_id in cluster.ids_on_disk(node_id)
    cluster.start_manager()
    cluster.start_node(node_id)
    await asyncio.to_thread(cluster.wait_no_orphans)
    assert file_id not in cluster.ids_on_disk(node_id)


async def test_a_removal_reaches_a_node_that_is_still_registering_repro(cluster: LocalCluster) -> None:
    """A delete that comes while the file's node registers (reconciled, not yet up: a window that load widens) removes
    the node's copy. The reconciliation read the file's row before the delete, so it will not call the copy an orphan;
    a removal given up as "node is down" then left it on the disk until the node registered again (seen as a multipart
    sweep's test failing under load). A node with no live session is still left to its next registration."""
    async with Client(cluster.address) as client:
        await client.put("doomed", b"bytes")
        node_id = (await client.stat("doomed")).node
        info = next(node for node in (await client.status()).nodes if node.id == node_id)
    (doomed,) = cluster.records()[node_id]
    pool = NodeConnections(Security())
    try:
        gone = NodeState(node_id, info.host, info.port)
        assert not await remove_copies(pool, gone, [doomed])
        assert doomed in cluster.ids_on_disk(node_id)
        registering = NodeState(node_id, info.host, info.port, claimed=True)
        assert await remove_copies(pool, registering, [doomed])
        assert doomed not in cluster.ids_on_disk(node_id)
    finally:
        pool.close()


def test_a_second_node_with_a_live_nodes_id_is_refused(cluster: LocalCluster) -> None:
    log = cluster.root / "impostor.log"
    impostor = start_daemon(
        ["storage", "--id", "100", "--manager", cluster.address, "--data", str(cluster.root / "impostor")],
        cluster.root,
        log,
    )
    try:
        deadline = time.monotonic() + 10
        while "node id 100 is in use" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        original_port = int(cluster.nodes[100].address.rpartition(":")[2])
        cluster.wait_for(lambda s: [(n.port, n.up) for n in s.nodes if n.id == 100] == [(original_port, True)], "100")
    finally:
        impostor.kill()

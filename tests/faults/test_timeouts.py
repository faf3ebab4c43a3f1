"""Timers measure only a peer that owes us something (PROTOCOL.md 9.5), and failures end in one error line.

Transfers here last several times the idle and request timeouts (lowered with the daemons' flags to TIMEOUT seconds):
slow sources and readers are built in the test, each step bounded in count and time, and each pause far below TIMEOUT,
so a loaded machine does not make a peer look stalled. Nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from dfsd.protocol import PROTOCOL_VERSION, FrameDecoder, ServersUnavailable, encode
from dfsd.protocol.messages import Data, End, Get, Hello, Message, Ok, Put, Sending, Stored, Welcome
from faultproxy import FaultProxy
from harness import LocalCluster, free_port

from dfsd.client import Client

TIMEOUT = "2"
TIMEOUTS = ("--idle-timeout", TIMEOUT, "--request-timeout", TIMEOUT)

# A slow peer's step: far below TIMEOUT, so only a peer that really stops looks stalled.
PAUSE = 0.05

# The test's own reading sockets keep a small receive buffer, so the servers see a slow reader as slow at once.
SMALL_BUFFER = 64 * 1024

# Longest any one test waits for something to happen.
PATIENCE = 120.0


@pytest.fixture
def timed_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A manager and one node, both with idle and request timeouts of TIMEOUT seconds."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager(*TIMEOUTS)
        cluster.start_node(100, True, None, *TIMEOUTS)
        yield cluster
    finally:
        cluster.stop()


class RawPeer:
    """A client speaking the protocol over a blocking socket, at whatever pace the test sets."""

    def __init__(self, address: str, receive_buffer: int = SMALL_BUFFER) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(PATIENCE)
        self.sock.connect((host, int(port)))
        self.decoder = FrameDecoder()

    def hello(self) -> None:
        self.send(Hello(PROTOCOL_VERSION, "client"))
        assert isinstance(self.receive(), Welcome)

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def receive(self, bite: int = 1024 * 1024, pause: float = 0.0) -> Message:
        """The next message, read ``bite`` bytes at a time with ``pause`` seconds between reads."""
        while (message := self.decoder.next_message()) is None:
            if pause:
                time.sleep(pause)
            data = self.sock.recv(bite)
            assert data, "the server closed the connection"
            self.decoder.receive_data(data)
        return message

    def close(self) -> None:
        self.sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def log_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def wait_for_log(log: Path, matches: Callable[[dict[str, object]], bool], what: str) -> dict[str, object]:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        for line in log_lines(log):
            if matches(line):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line for {what} in {log}:\n{log.read_text()[-3000:]}")


async def paced(count: int, chunk: int) -> AsyncIterator[bytes]:
    """``count`` random chunks of ``chunk`` bytes, PAUSE seconds apart: a slow source that never stops for long."""
    for _ in range(count):
        await asyncio.sleep(PAUSE)
        yield os.urandom(chunk)


# --- item 1: long transfers ---------------------------------------------------------------------------------------


async def test_upload_longer_than_the_idle_and_request_timeouts_repro(timed_cluster: LocalCluster) -> None:
    """The manager's pooled connection to the node timed out while the node was rightly silent between ok and
    stored, as the client kept sending."""
    sent = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        async for chunk in paced(160, 64 * 1024):  # 10 MiB over at least 8 s: four timeouts
            sent.update(chunk)
            yield chunk

    async with Client(timed_cluster.address) as client:
        stored = await client.put("slow-upload", source())
        assert stored.sha256 == sent.digest()
        assert hashlib.sha256(await client.read("slow-upload")).digest() == sent.digest()


def test_upload_frame_slower_than_the_nodes_request_timeout_repro(timed_cluster: LocalCluster) -> None:
    """A client that sends one data frame over several request timeouts, a byte run every PAUSE: the manager is served
    (bytes keep arriving), and the node, which gets the frame only when it is whole, must not time the manager out
    for waiting on its client."""
    payload = os.urandom(1024 * 1024)
    frame = encode(Data(payload))
    peer = RawPeer(timed_cluster.address)
    try:
        peer.hello()
        peer.send(Put("trickled"))
        assert isinstance(peer.receive(), Ok)
        piece = len(frame) // 100 + 1  # 100 pieces over at least 5 s
        for start in range(0, len(frame), piece):
            peer.sock.sendall(frame[start : start + piece])
            time.sleep(PAUSE)
        peer.send(End(hashlib.sha256(payload).digest()))
        stored = peer.receive()
        assert isinstance(stored, Stored), stored
        assert stored.size == len(payload)
    finally:
        peer.close()


def test_download_by_a_slow_reader_longer_than_the_timeouts_repro(timed_cluster: LocalCluster) -> None:
    """A client reading about 1 MiB/s was cut off: the request timeout acted as a total time to drain the write buffer,
    and the idle timer closed the connection while the end of the file was still buffered."""
    payload = os.urandom(10 * 1024 * 1024)  # at least 8 s at the pace below: four timeouts
    asyncio.run(_put(timed_cluster.address, "for-a-slow-reader", payload))
    peer = RawPeer(timed_cluster.address)
    try:
        peer.hello()
        peer.send(Get("for-a-slow-reader"))
        sending = peer.receive()
        assert isinstance(sending, Sending) and sending.length == len(payload)
        received = bytearray()
        for _ in range(len(payload)):  # bounded: each round takes at least one byte
            message = peer.receive(bite=64 * 1024, pause=PAUSE)
            if isinstance(message, End):
                break
            assert isinstance(message, Data)
            received += message.data
        assert received == payload
    finally:
        peer.close()


async def test_move_longer_than_the_idle_and_request_timeouts_repro(tmp_path: Path) -> None:
    """A node-to-node copy over a slow link: the source timed the target's answer from the start of the stream (the
    request timeout), and the manager timed the source's (the idle timeout), so a move longer than either failed."""
    cluster = LocalCluster(tmp_path)
    port = free_port()
    try:
        cluster.start_manager(*TIMEOUTS)
        cluster.start_node(100, True, None, *TIMEOUTS)
        files = {f"big/{index}": os.urandom(32 * 1024 * 1024) for index in range(2)}
        async with Client(cluster.address) as client:
            for name, payload in files.items():
                await client.put(name, payload)
        with FaultProxy(f"127.0.0.1:{port}") as slow_link:
            slow_link.delay = 0.06  # 256 KiB per 0.06 s: about 4 MiB/s, so one file takes about 8 s: four timeouts
            await asyncio.to_thread(
                cluster.start_node, 101, True, None, *TIMEOUTS, "--port", str(port), "--advertise", slow_link.address
            )
            await asyncio.to_thread(cluster.wait_balanced, PATIENCE)
            async with Client(cluster.address) as client:
                status = await client.status()
                assert (status.rebalance.moved, status.rebalance.failed) == (1, 0), status.rebalance
                assert sorted(node.files for node in status.nodes) == [1, 1]
                for name, payload in files.items():
                    assert await client.read(name) == payload
        await asyncio.to_thread(cluster.wait_no_orphans)
    finally:
        cluster.stop()


# --- item 2: readers that stop, peers that stall -------------------------------------------------------------------


def test_a_reader_that_stops_is_dropped_after_the_request_timeout(timed_cluster: LocalCluster) -> None:
    asyncio.run(_put(timed_cluster.address, "never-read", os.urandom(24 * 1024 * 1024)))
    peer = RawPeer(timed_cluster.address)
    try:
        peer.hello()
        peer.send(Get("never-read"))
        assert isinstance(peer.receive(bite=4096), Sending)
        # Read nothing more: once the buffers on the way are full, the manager sees no byte taken.
        assert timed_cluster.manager is not None
        dropped = wait_for_log(
            timed_cluster.manager.log,
            lambda line: line.get("event") == "request" and line.get("op") == "get",
            "the get's outcome",
        )
        assert dropped["outcome"] == "peer_gone"
        assert f"took nothing from us for {TIMEOUT} s" in str(dropped["error"])
    finally:
        peer.close()
    asyncio.run(_put(timed_cluster.address, "after", b"the manager serves on"))


def test_a_peer_stalled_in_the_first_frame_of_a_request_is_dropped_after_the_request_timeout_repro(
    tmp_path: Path,
) -> None:
    """Half a request's first frame, then nothing: the request timeout applies (PROTOCOL.md 9.6, "in the middle of a
    frame"), not the idle timeout, which here is longer than the test waits."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--idle-timeout", "600", "--request-timeout", "1")
        peer = RawPeer(cluster.address)
        try:
            peer.hello()
            frame = encode(Get("half of a frame"))
            peer.sock.sendall(frame[: len(frame) // 2])
            assert read_until_closed(peer.sock) == b""  # PATIENCE (the socket's timeout) is far below 600 s
        finally:
            peer.close()
    finally:
        cluster.stop()


# --- item 3: one error line, one JSON object per log line ----------------------------------------------------------


def test_push_to_a_manager_killed_mid_upload_prints_only_its_error_and_hint_repro(
    timed_cluster: LocalCluster,
) -> None:
    """asyncio printed "Task exception was never retrieved" and a traceback after dfs-push's error and hint lines."""
    command = Path(sys.executable).parent / "dfs-push"
    push = subprocess.Popen(
        [str(command), "-", "--name", "interrupted", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DFS_MANAGER": timed_cluster.address},
    )
    assert push.stdin is not None and push.stderr is not None
    try:
        for _ in range(200):  # until the upload is under way on the node's disk (bounded)
            push.stdin.write(os.urandom(256 * 1024))
            push.stdin.flush()
            if timed_cluster.partial_files(100):
                break
            time.sleep(PAUSE)
        assert timed_cluster.partial_files(100), "the upload never reached the node"
        assert timed_cluster.manager is not None
        # Frozen first, the manager leaves bytes unread, so its death resets the connection (the case that printed).
        os.kill(timed_cluster.manager.pid, signal.SIGSTOP)
        for _ in range(40):
            push.stdin.write(os.urandom(256 * 1024))
        push.stdin.flush()
        timed_cluster.manager.kill()
        for _ in range(200):  # the client notices on its next write or read
            try:
                push.stdin.write(os.urandom(256 * 1024))
                push.stdin.flush()
            except BrokenPipeError:
                break
            if push.poll() is not None:
                break
            time.sleep(PAUSE)
        try:
            push.stdin.close()
        except BrokenPipeError:
            pass
        stderr = push.stderr.read().decode()
        assert push.wait(PATIENCE) == 1, stderr
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("dfs-push: error 1: "), stderr
    assert all(line.startswith(("dfs-push: error 1: ", "dfs-push: hint: ")) for line in lines), stderr
    assert "Traceback" not in stderr and "Task exception" not in stderr


async def test_node_killed_mid_move_and_mid_upload_leaves_only_json_in_the_logs_repro(tmp_path: Path) -> None:
    """A node killed while files move to it and an upload goes to it: the manager's log got asyncio's traceback."""
    cluster = LocalCluster(tmp_path)
    port = free_port()
    try:
        cluster.start_manager(*TIMEOUTS)
        cluster.start_node(100, True, None, *TIMEOUTS)
        async with Client(cluster.address) as client:
            for index in range(8):
                await client.put(f"m/{index}", os.urandom(4 * 1024 * 1024))
        with FaultProxy(f"127.0.0.1:{port}") as slow_link:
            slow_link.delay = 0.06
            await asyncio.to_thread(
                cluster.start_node, 101, True, None, *TIMEOUTS, "--port", str(port), "--advertise", slow_link.address
            )
            async with Client(cluster.address) as client:
                # The emptier node gets the upload; it goes on while moves to that node are under way.
                upload = asyncio.create_task(client.put("to-101", paced(2000, 64 * 1024)))
                try:
                    await cluster.until_partial(101, PATIENCE)
                    await asyncio.to_thread(cluster.wait_for, lambda s: s.rebalance.running, "a move under way")
                    # Frozen first, the node leaves bytes unread, so its death resets the connections to it.
                    os.kill(cluster.nodes[101].pid, signal.SIGSTOP)
                    await asyncio.sleep(PAUSE * 10)
                    cluster.nodes[101].kill()
                    with pytest.raises(ServersUnavailable):
                        await upload
                finally:
                    upload.cancel()
                    await asyncio.gather(upload, return_exceptions=True)
            await asyncio.to_thread(cluster.wait_node_down, 101)
            await asyncio.to_thread(cluster.wait_for, lambda s: not s.rebalance.running, "the rebalance to end")
        assert cluster.manager is not None
        for daemon in (cluster.nodes[100], cluster.manager):  # a clean exit: what was never retrieved is reported
            daemon.terminate()
        for log in (cluster.manager.log, cluster.nodes[100].log):
            log_lines(log)  # each line is one JSON object, or this raises
            assert "Traceback" not in log.read_text()
    finally:
        cluster.stop()


async def _put(address: str, name: str, payload: bytes) -> None:
    async with Client(address) as client:
        await client.put(name, payload)

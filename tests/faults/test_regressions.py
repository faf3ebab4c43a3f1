"""Regression tests, each named after the bug it reproduces (found in review)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from dfsd.protocol import FileNotFound, encode
from dfsd.protocol.messages import Welcome
from faultproxy import FaultProxy
from harness import LocalCluster, free_port, run_tool, start_daemon

from dfsd.client import Client


async def test_drained_node_that_reconnects_stays_drained(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for index in range(9):
            await client.put(f"d/{index}", b"x")
        await client.drain(102)
        await asyncio.to_thread(
            cluster.wait_for, lambda s: [n.files for n in s.nodes if n.id == 102] == [0], "102 drained"
        )
        cluster.nodes[102].kill()  # a blip of its session, not a retirement
        await asyncio.to_thread(cluster.wait_node_down, 102)
        await asyncio.to_thread(cluster.start_node, 102)
        for index in range(6):
            await client.put(f"after/{index}", b"y")
            assert (await client.stat(f"after/{index}")).node != 102
        status = await client.status()
        assert [(n.draining, n.files) for n in status.nodes if n.id == 102] == [(True, 0)]


def test_idle_client_reconnects_after_the_manager_closed_its_connection(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--idle-timeout", "0.5")
        cluster.start_node(100)

        async def twice() -> None:
            async with Client(cluster.address) as client:
                await client.put("first", b"1")
                await asyncio.sleep(1.5)  # the manager drops the idle connection meanwhile
                await client.put("second", b"2")
                assert await client.read("second") == b"2"

        asyncio.run(twice())
    finally:
        cluster.stop()


def test_push_from_a_pipe_does_not_announce_size_zero(cluster: LocalCluster) -> None:
    result = run_tool("dfs-push", "/dev/stdin", "--name", "piped", manager=cluster.address, stdin=b"through a pipe")
    assert result.returncode == 0, result.stderr
    assert run_tool("dfs-cat", "piped", manager=cluster.address).stdout == b"through a pipe"


async def test_get_file_leaves_an_existing_file_alone_on_error(cluster: LocalCluster, tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"do not truncate me")
    async with Client(cluster.address) as client:
        with pytest.raises(FileNotFound):
            await client.get_file("no such file", precious)
    assert precious.read_bytes() == b"do not truncate me"


def test_registration_gives_up_on_a_manager_that_never_answers(tmp_path: Path) -> None:
    """A 'manager' that welcomes a node and then says nothing: the node must hang up and dial again."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(10)
        for _ in range(3):
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.recv(65536)  # hello
            sock.sendall(encode(Welcome(1)))
            accepted.append(sock)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    node = start_daemon(
        ["storage", "--id", "1", "--manager", f"127.0.0.1:{port}", "--data", str(tmp_path / "n"),
         "--manager-timeout", "0.5"],
        tmp_path,
        tmp_path / "node.log",
    )  # fmt: skip
    try:
        thread.join(15)
        assert len(accepted) >= 2, (tmp_path / "node.log").read_text()
    finally:
        node.kill()
        listener.close()
        for sock in accepted:
            sock.close()


async def test_a_frozen_move_target_does_not_stall_the_rebalancer(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    port = free_port()
    try:
        cluster.start_manager()
        for node_id in (100, 101):
            cluster.start_node(node_id, True, None, "--request-timeout", "2")
        async with Client(cluster.address) as client:
            files = {f"m/{index}": os.urandom(300_000) for index in range(40)}
            for name, payload in files.items():
                await client.put(name, payload)
        with FaultProxy(f"127.0.0.1:{port}") as slow_link:
            slow_link.delay = 0.05
            await asyncio.to_thread(
                cluster.start_node, 102, True, None, "--port", str(port), "--advertise", slow_link.address
            )
            await asyncio.to_thread(cluster.wait_for, lambda s: s.rebalance.moved >= 1, "moves under way")
            os.kill(cluster.nodes[102].pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                await asyncio.to_thread(cluster.wait_for, lambda s: not s.rebalance.running, "rebalancer idle", 30)
                assert time.monotonic() - started < 30
            finally:
                os.kill(cluster.nodes[102].pid, signal.SIGCONT)
            slow_link.delay = 0
            async with Client(cluster.address) as client:
                await client.rebalance()
            await asyncio.to_thread(cluster.wait_balanced)
            async with Client(cluster.address) as client:
                for name, payload in files.items():
                    assert await client.read(name) == payload
            await asyncio.to_thread(cluster.wait_no_orphans)
    finally:
        cluster.stop()

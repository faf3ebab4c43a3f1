"""Access control and hostile peers: the shared secret, TLS, timeouts and limits, with real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import BadRequest, NotAuthorised, ServersUnavailable, decode_body, encode
from dfsd.protocol.messages import Error, Hello
from faultproxy import FaultProxy
from harness import LocalCluster, run_tool

from dfsd.client import Client
from dfsd.settings import Security, client_context

SECRET = "correct horse battery staple"


@pytest.fixture
def secret_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, env={"DFS_SECRET": SECRET}, security=Security(secret=SECRET.encode()))
    try:
        cluster.start_manager()
        for node_id in (100, 101):
            cluster.start_node(node_id)
        yield cluster
    finally:
        cluster.stop()


async def test_with_the_secret_everything_works_and_the_secret_never_crosses_the_wire(
    secret_cluster: LocalCluster,
) -> None:
    with FaultProxy(secret_cluster.address) as tap:
        tap.captured = bytearray()
        async with Client(tap.address, Security(secret=SECRET.encode())) as client:
            await client.put("secret.txt", b"for members only")
            assert await client.read("secret.txt") == b"for members only"
        assert b"for members only" in tap.captured  # the tap sees the traffic...
        assert SECRET.encode() not in tap.captured  # ...but never the secret


async def test_without_the_secret_every_request_is_refused(secret_cluster: LocalCluster) -> None:
    for security in (Security(), Security(secret=b"wrong guess")):
        with pytest.raises(NotAuthorised):
            async with Client(secret_cluster.address, security) as client:
                await client.status()
    result = run_tool("dfs-ls", manager=secret_cluster.address)
    assert result.returncode == 9 and "error 9: not authorised" in result.stderr.decode()
    assert "DFS_SECRET" in result.stderr.decode()  # says what to do


def test_a_raw_hello_without_proof_gets_error_9(secret_cluster: LocalCluster) -> None:
    host, port = secret_cluster.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode(Hello(1, "client")))
        answer = sock.recv(65536)
    message = decode_body(answer[4:])
    assert isinstance(message, Error) and message.code == 9


def test_a_node_with_the_wrong_secret_never_joins(secret_cluster: LocalCluster) -> None:
    secret_cluster.env = {"DFS_SECRET": "not the secret"}
    secret_cluster.start_node(102, wait=False)
    log = secret_cluster.root / "node-102.log"
    deadline = time.monotonic() + 10
    while "not authorised" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    secret_cluster.wait_for(lambda s: [n.id for n in s.nodes] == [100, 101], "only the two real nodes")


async def test_a_client_with_a_secret_refuses_an_open_server(cluster: LocalCluster) -> None:
    with pytest.raises(NotAuthorised, match="did not prove"):
        async with Client(cluster.address, Security(secret=b"s3cret")) as client:
            await client.put("leak", b"must not be sent to an impostor")
    assert "cluster_open" in (cluster.root / "manager.log").read_text()  # the open manager said so at start-up


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    directory = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dfsd test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    return directory


async def test_tls_everywhere(tmp_path: Path, certificates: Path) -> None:
    tls = {
        "DFS_TLS_CA": str(certificates / "ca.pem"),  # outgoing connections of every daemon
    }
    flags = ("--tls-cert", str(certificates / "server.pem"), "--tls-key", str(certificates / "server.key"))
    security = Security(client_tls=client_context(certificates / "ca.pem"))
    cluster = LocalCluster(tmp_path, env=tls, security=security)
    try:
        cluster.start_manager(*flags)
        for node_id in (100, 101):
            cluster.start_node(node_id, True, None, *flags)
        with FaultProxy(cluster.address) as tap:
            tap.captured = bytearray()
            async with Client(tap.address, security) as client:
                await client.put("tls.txt", b"private bytes " * 100)
                assert await client.read("tls.txt") == b"private bytes " * 100
                streamed = os.urandom(5 * 1024 * 1024 + 17)  # data frames through every hop's TLS receive path
                await client.put("tls.bin", streamed)
                assert await client.read("tls.bin") == streamed
            assert b"private bytes" not in tap.captured
        with pytest.raises((ServersUnavailable, NotAuthorised)):  # plain TCP to a TLS port
            async with Client(cluster.address, Security()) as client:
                await client.status()
        cluster.start_node(102, True, None, *flags)  # node-to-node moves run over TLS too
        await asyncio.to_thread(cluster.wait_balanced)
    finally:
        cluster.stop()


@pytest.fixture
def strict_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager(
            "--idle-timeout", "1", "--request-timeout", "1", "--max-connections", "3000", "--max-file-size", "1000"
        )
        cluster.start_node(100)
        yield cluster
    finally:
        cluster.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_silent_and_stalled_peers_are_dropped(strict_cluster: LocalCluster) -> None:
    host, port = strict_cluster.address.split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as silent:
        assert read_until_closed(silent) == b""  # said nothing: dropped
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(struct.pack(">I", 100) + b"\xa1")  # stops in the middle of a frame
        assert read_until_closed(stalled) == b""
    assert time.monotonic() - started < 8


async def test_thousands_of_idle_connections_do_not_starve_a_client(strict_cluster: LocalCluster) -> None:
    host, port = strict_cluster.address.split(":")
    idle = []
    try:
        for _ in range(2000):
            idle.append(socket.create_connection((host, int(port)), timeout=10))
        started = time.monotonic()
        async with Client(strict_cluster.address) as client:
            for index in range(20):
                await client.put(f"busy/{index}", b"x" * 100)
                assert await client.read(f"busy/{index}") == b"x" * 100
        assert time.monotonic() - started < 10
    finally:
        for sock in idle:
            sock.close()


async def test_files_over_the_size_limit_are_refused(strict_cluster: LocalCluster) -> None:
    async with Client(strict_cluster.address) as client:
        with pytest.raises(BadRequest, match="at most 1000 bytes"):
            await client.put("big", b"x" * 1001)

        async def unknown_size():  # type: ignore[no-untyped-def]
            yield b"x" * 600
            yield b"x" * 600

        with pytest.raises(BadRequest, match="at most 1000 bytes"):
            await client.put("big", unknown_size())
        await client.put("big", b"x" * 1000)
    await asyncio.to_thread(strict_cluster.wait_no_orphans)


def test_connections_over_the_limit_get_error_1(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--max-connections", "4")
        host, port = cluster.address.split(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            message = decode_body(read_until_closed(extra)[4:])
            assert isinstance(message, Error) and message.code == 1
        for sock in held:
            sock.close()
    finally:
        cluster.stop()

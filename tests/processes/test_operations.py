"""What an operator sees: Prometheus metrics, configuration precedence, and a node on another (network) host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LocalCluster, free_port, run_tool, start_daemon
from prometheus_client.parser import text_string_to_metric_families

from dfsd.client import Client


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_are_served_and_parse(tmp_path: Path) -> None:
    manager_metrics, node_metrics = free_port(), free_port()
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--metrics-port", str(manager_metrics))
        cluster.start_node(100, True, None, "--metrics-port", str(node_metrics))
        cluster.start_node(101)
        async with Client(cluster.address) as client:
            for index in range(10):
                await client.put(f"m/{index}", b"x" * 1000)
            await client.read("m/0")
            with pytest.raises(Exception):  # noqa: B017 - any error: it is counted under its outcome
                await client.read("missing")
        samples = scrape(manager_metrics)
        assert samples[("dfsd_requests_total", (("op", "put"), ("outcome", "ok")))] == 10
        assert samples[("dfsd_requests_total", (("op", "get"), ("outcome", "error 2")))] == 1
        assert samples[("dfsd_request_seconds_count", (("op", "put"),))] == 10
        assert samples[("dfsd_nodes", (("state", "up"),))] == 2
        assert samples[("dfsd_node_files", (("node", "100"),))] + samples[("dfsd_node_files", (("node", "101"),))] == 10
        assert samples[("dfsd_node_bytes", (("node", "100"),))] == 5000
        assert samples[("dfsd_lost_files", ())] == 0
        assert samples[("dfsd_bytes_total", (("direction", "in"),))] > 10_000
        node_samples = scrape(node_metrics)
        assert node_samples[("dfsd_requests_total", (("op", "store"), ("outcome", "ok")))] == 5
        assert node_samples[("dfsd_bytes_total", (("direction", "in"),))] > 5000
    finally:
        cluster.stop()


def test_configuration_precedence_flags_then_environment_then_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "dfsd.toml"
    config.write_text(
        f'[manager]\nport = {file_port}\ndb = "{tmp_path / "from-file.db"}"\nnode-timeout = 2.5\n'
        "[storage]\nid = 7\nheartbeat = 0.2\n"
    )

    def manager(*flags: str, env: dict[str, str] | None = None) -> str:
        daemon = start_daemon(["manager", "--config", str(config), *flags], tmp_path, tmp_path / "m.log", env)
        daemon.terminate()
        return daemon.address

    assert manager() == f"127.0.0.1:{file_port}"  # the file alone
    assert (tmp_path / "from-file.db").exists()
    assert manager(env={"DFS_PORT": str(env_port)}) == f"127.0.0.1:{env_port}"  # environment over file
    assert manager("--port", str(flag_port), env={"DFS_PORT": str(env_port)}) == f"127.0.0.1:{flag_port}"  # flag
    assert manager(env={"DFS_CONFIG": str(config), "DFS_PORT": "0"}) != f"127.0.0.1:{file_port}"

    bad = subprocess.run(
        [str(Path(sys.executable).parent / "dfsd"), "manager", "--config", str(config)],
        env={**os.environ, "DFS_PORT": "eighty"},
        capture_output=True,
        check=False,
    )
    assert bad.returncode == 64 and b"DFS_PORT" in bad.stderr  # a bad value says where it came from

    node = start_daemon(
        ["storage", "--config", str(config), "--data", str(tmp_path / "node")],
        tmp_path,
        tmp_path / "n.log",
        {"DFS_MANAGER": "127.0.0.1:1"},  # nobody there: the node keeps retrying, which is fine here
    )
    try:
        assert node.address.startswith("127.0.0.1:")
        assert '"node": 7' in (tmp_path / "n.log").read_text()  # its id came from the [storage] table
    finally:
        node.kill()


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces of our own joined by a veth pair: 10.213.0.1 ("manager host") and 10.213.0.2 ("node
    host"). Every byte of the test stays inside them. Needs root and iproute2; skipped with the reason otherwise."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip command")
    suffix = str(os.getpid() % 100_000)
    manager_ns, node_ns = f"dfsd-m{suffix}", f"dfsd-n{suffix}"

    def ip(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", *args], capture_output=True, check=False)

    if ip("netns", "add", manager_ns).returncode != 0:
        pytest.skip("cannot create network namespaces here")
    try:
        steps = [
            ("netns", "add", node_ns),
            ("link", "add", f"vm{suffix}", "netns", manager_ns, "type", "veth", "peer", "name", f"vn{suffix}",
             "netns", node_ns),
            ("-n", manager_ns, "addr", "add", "10.213.0.1/30", "dev", f"vm{suffix}"),
            ("-n", node_ns, "addr", "add", "10.213.0.2/30", "dev", f"vn{suffix}"),
            ("-n", manager_ns, "link", "set", f"vm{suffix}", "up"),
            ("-n", node_ns, "link", "set", f"vn{suffix}", "up"),
            ("-n", manager_ns, "link", "set", "lo", "up"),
            ("-n", node_ns, "link", "set", "lo", "up"),
        ]  # fmt: skip
        for step in steps:
            result = ip(*step)
            if result.returncode != 0:
                pytest.skip(f"ip {' '.join(step)}: {result.stderr.decode().strip()}")
        yield manager_ns, node_ns
    finally:
        ip("netns", "del", node_ns)
        ip("netns", "del", manager_ns)


def test_a_node_on_another_host_across_a_veth_pair(tmp_path: Path, two_hosts: tuple[str, str]) -> None:
    manager_ns, node_ns = two_hosts
    on_manager_host = ("ip", "netns", "exec", manager_ns)
    on_node_host = ("ip", "netns", "exec", node_ns)
    manager = start_daemon(
        ["manager", "--host", "10.213.0.1", "--port", "0", "--db", str(tmp_path / "m.db")],
        tmp_path,
        tmp_path / "manager.log",
        prefix=on_manager_host,
    )
    node = None
    try:
        node = start_daemon(
            ["storage", "--id", "100", "--host", "10.213.0.2", "--manager", manager.address, "--data",
             str(tmp_path / "node")],
            tmp_path,
            tmp_path / "node.log",
            prefix=on_node_host,
        )  # fmt: skip
        payload = os.urandom(3_000_000)
        for _ in range(100):
            status = run_tool("dfsd", "status", "--json", manager=manager.address, prefix=on_manager_host)
            if b'"up": true' in status.stdout:
                break
            time.sleep(0.1)
        assert b'"host": "10.213.0.2"' in status.stdout, status.stdout
        pushed = run_tool("dfs-push", "-", "--name", "far", manager=manager.address, stdin=payload,
                          prefix=on_manager_host)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        fetched = run_tool("dfs-cat", "far", manager=manager.address, prefix=on_manager_host)
        assert fetched.stdout == payload
        on_disk = [path.read_bytes() for path in (tmp_path / "node").rglob("*") if path.is_file()]
        assert on_disk == [payload]  # the bytes crossed the veth pair and landed on the node's disk
    finally:
        for daemon in (node, manager):
            if daemon is not None:
                daemon.kill()


async def test_backup_of_a_running_manager_restores(cluster: LocalCluster, tmp_path: Path) -> None:
    async with Client(cluster.address) as client:
        for index in range(50):
            await client.put(f"backed/{index}", str(index).encode())
    copy = tmp_path / "backup.db"
    result = run_tool("dfsd", "backup", "--db", str(cluster.root / "manager.db"), str(copy), manager=cluster.address)
    assert result.returncode == 0, result.stderr
    assert cluster.manager is not None
    cluster.manager.kill()
    (cluster.root / "manager.db").unlink()
    for leftover in cluster.root.glob("manager.db-*"):
        leftover.unlink()
    copy.rename(cluster.root / "manager.db")  # restore, restart, and every file is there
    cluster.start_manager()
    cluster.wait_for(lambda s: all(n.up for n in s.nodes), "nodes back")
    async with Client(cluster.address) as client:
        assert len([info async for info in client.list("backed/")]) == 50
        assert await client.read("backed/49") == b"49"

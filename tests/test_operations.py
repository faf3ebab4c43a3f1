"""What an operator sees: Prometheus metrics, configuration precedence, and a node on another (network) host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from harness import LocalCluster, start_daemon
from prometheus_client.parser import text_string_to_metric_families

from dfsd.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

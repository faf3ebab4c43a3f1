"""What an operator sees: Prometheus metrics, configuration precedence, and a node on another (network) host."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from harness import LocalCluster
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

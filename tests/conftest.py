from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from gateway_live import LiveGateway, running_gateway
from harness import LocalCluster


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test runs on uvloop, like the daemons."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running manager with no storage node yet."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(bare_cluster: LocalCluster) -> LocalCluster:
    """A running manager and three storage nodes (ids 100, 101, 102), all up."""
    for node_id in (100, 101, 102):
        bare_cluster.start_node(node_id)
    return bare_cluster


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A manager, two storage nodes and an S3/REST gateway (users alice and bob), shared by a test module."""
    yield from running_gateway(tmp_path_factory.mktemp("gateway"))

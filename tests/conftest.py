from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
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

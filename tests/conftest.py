from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from gateway_live import LiveGateway, running_gateway
from harness import LocalCluster
from postgres import PostgresServer

from dfsd.manager.store import Location, PostgresURL


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session, started by the first test that needs it."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> PostgresURL:
    """A new, empty PostgreSQL database for this test."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """Where a metadata store lives, once for each backend: a fresh SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "meta.db"
    url: PostgresURL = request.getfixturevalue("postgres_url")
    return url

"""A manager on PostgreSQL (``--db postgresql://...``), as real processes: the same promises as on SQLite.

The database is a real PostgreSQL server started by the test session (``tests/postgres.py``); the ids the manager
recorded are read back from it to check that every node's disk holds exactly the files recorded there.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
from harness import LocalCluster, run_tool

from dfsd.client import Client
from dfsd.manager.store import PostgresURL


async def recorded_ids(url: PostgresURL) -> dict[int, set[int]]:
    conn = await asyncpg.connect(url.url)
    try:
        placed: dict[int, set[int]] = {}
        for node, file_id in await conn.fetch("SELECT node, id FROM files"):
            placed.setdefault(node, set()).add(file_id)
        return placed
    finally:
        await conn.close()


async def test_files_survive_a_manager_restart_on_postgresql(tmp_path: Path, postgres_url: PostgresURL) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager("--db", postgres_url.url)
        for node_id in (100, 101, 102):
            cluster.start_node(node_id)
        payloads = {f"dir/file-{index}": os.urandom(index * 7919) for index in range(12)}
        payloads["big"] = os.urandom(3 * 1024 * 1024 + 5)
        async with Client(cluster.address) as client:
            for name, data in payloads.items():
                await client.put(name, data)
            assert await client.read("dir/file-5") == payloads["dir/file-5"]
            await client.delete("dir/file-0")
            del payloads["dir/file-0"]
        assert not (tmp_path / "manager.db").exists()  # nothing went to SQLite

        cluster.manager.terminate()  # type: ignore[union-attr]
        cluster.start_manager("--db", postgres_url.url)
        cluster.wait_for(lambda status: sum(node.up for node in status.nodes) == 3, "nodes back")
        async with Client(cluster.address) as client:
            assert sorted([info.name async for info in client.list("")]) == sorted(payloads)
            for name, data in payloads.items():
                assert await client.read(name) == data
            await client.put("after restart", b"new")  # a fresh block of ids, none reused
            assert await client.read("after restart") == b"new"

        recorded = await recorded_ids(postgres_url)
        assert sum(len(ids) for ids in recorded.values()) == len(payloads) + 1
        cluster.wait_for(lambda status: not status.rebalance.running, "rebalance idle")
        recorded = await recorded_ids(postgres_url)
        for node_id in cluster.nodes:
            assert cluster.ids_on_disk(node_id) == recorded.get(node_id, set())  # no orphan, nothing missing
    finally:
        cluster.stop()


def test_manager_reports_an_unreachable_database(tmp_path: Path, postgres_url: PostgresURL) -> None:
    unreachable = postgres_url.url.replace("/test_", "/no_such_database_")
    result = run_tool("dfsd", "manager", "--port", "0", "--db", unreachable, manager="127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 69
    assert b"cannot open the PostgreSQL database" in result.stderr
    assert b"that the database exists" in result.stderr


def test_backup_of_postgresql_points_at_pg_dump(tmp_path: Path, postgres_url: PostgresURL) -> None:
    with_password = postgres_url.url.replace("postgres@", "postgres:s3cret@")
    result = run_tool("dfsd", "backup", "--db", with_password, str(tmp_path / "copy"), manager="127.0.0.1:1")
    assert result.returncode == 64
    assert b"pg_dump" in result.stderr
    assert b"s3cret" not in result.stderr  # the password is never shown
    assert not (tmp_path / "copy").exists()


def test_backup_of_a_missing_sqlite_database_says_so(tmp_path: Path) -> None:
    result = run_tool("dfsd", "backup", "--db", str(tmp_path / "none.db"), str(tmp_path / "copy"), manager="x:1")
    assert result.returncode == 66
    assert b"no database at" in result.stderr


@pytest.mark.parametrize("command", ["manager", "backup"])
def test_db_of_an_unknown_url_scheme_is_a_usage_error(command: str, tmp_path: Path) -> None:
    args = ["--port", "0"] if command == "manager" else [str(tmp_path / "copy")]
    result = run_tool("dfsd", command, *args, "--db", "mysql://root@localhost/dfsd", manager="127.0.0.1:1")
    assert result.returncode == 64
    assert b"postgresql://USER" in result.stderr

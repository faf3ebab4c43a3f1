"""``dfsd migrate SRC DST``: all metadata from SQLite to a real PostgreSQL database and back, verified, and a
destination that is not empty refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from harness import LocalCluster, run_tool

from dfsd.client import Client
from dfsd.manager.store import Location, MetadataStore, NodeRecord, PartRecord, PostgresURL, UploadRecord

FILES = 2500  # more than one page (tools/migrate.py PAGE) of rows
PARTS = 1050
NEXT_ID = 9000


def migrate(source: Location, dest: Location) -> tuple[int, str, str]:
    result = run_tool(
        "dfsd", "migrate", str(getattr(source, "url", source)), str(getattr(dest, "url", dest)), manager=""
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def fill(location: Location) -> None:
    """Files (some marked lost), a draining node and a live one, a bucket, multipart uploads with their parts, and a
    file-id counter ahead of every id."""
    store = await MetadataStore.open(location)
    try:
        await asyncio.gather(
            *(
                store.commit(id_, f"dir/file-{id_:05}", 100 + id_ % 2, id_ * 3, bytes([id_ % 256]) * 32, 1.5 + id_)
                for id_ in range(1, FILES + 1)
            )
        )
        await store.set_lost([7, 8, 2001], 1234.25)
        await store.save_node(NodeRecord(100, "10.0.0.1", 9100, 10**12, 10**11, 99.5, draining=False))
        await store.save_node(NodeRecord(101, "10.0.0.2", 9101, 2 * 10**12, 10**11, 99.75, draining=False))
        await store.set_draining(100, True)
        await store.create_bucket("photos", "alice", 1.5)
        for upload_id, parts in (("upload-a", PARTS), ("upload-b", 2)):
            await store.create_upload(UploadRecord(upload_id, f"photos/{upload_id}", "alice", 2.5, {"k": "v"}, None))
            for number in range(1, parts + 1):  # one upload's parts span two pages: its key is (upload, number)
                part = PartRecord(upload_id, number, f".multipart/{upload_id}/{number}", number, 5, b"m" * 16, 3.5)
                await store.record_part(part, 0.0)
        await store.set_next_file_id(NEXT_ID)
    finally:
        await store.close()


async def contents(location: Location) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    store = await MetadataStore.open(location)
    try:
        tables = {table: await store.export_rows(table, None, 10 * FILES) for table in store.MIGRATED_TABLES}
        return tables, await store.next_file_id()
    finally:
        await store.close()


async def test_migrate_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_url: PostgresURL) -> None:
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    await fill(source)
    status, there, err = migrate(source, postgres_url)
    assert status == 0, err
    assert f"{FILES} files, 2 nodes, 1 buckets, 2 multipart_uploads, {PARTS + 2} multipart_parts; verified" in there
    status, again, err = migrate(postgres_url, back)
    assert status == 0, err
    assert there.rpartition("sha256")[2] == again.rpartition("sha256")[2]  # the same digest on both copies
    original, copied = await contents(source), await contents(back)
    assert copied == original
    tables, next_id = await contents(postgres_url)
    assert tables == original[0] and next_id == NEXT_ID
    lost_column = MetadataStore.MIGRATED_TABLES["files"].split(", ").index("lost")
    lost = [row for row in tables["files"] if row[lost_column] is not None]
    assert [row[0] for row in lost] == [7, 8, 2001]
    assert [row[-1] for row in tables["nodes"]] == [1, 0]  # node 100 still draining
    assert tables["buckets"] == [("photos", "alice", 1.5)]
    assert [row[0] for row in tables["multipart_uploads"]] == ["upload-a", "upload-b"]
    assert [row[:2] for row in tables["multipart_parts"]][PARTS - 1 :] == [
        ("upload-a", PARTS),
        ("upload-b", 1),
        ("upload-b", 2),
    ]


async def test_migrate_refuses_a_non_empty_destination(tmp_path: Path, postgres_url: PostgresURL) -> None:
    source = tmp_path / "source.db"
    await fill(source)
    assert migrate(source, postgres_url)[0] == 0
    before = await contents(postgres_url)
    status, out, err = migrate(source, postgres_url)
    assert status == 73, err
    assert out == ""
    held = f"{FILES} files, 2 nodes, 1 buckets, 2 multipart_uploads, {PARTS + 2} multipart_parts"
    assert f"the destination {postgres_url} is not empty (it holds {held})" in err
    assert await contents(postgres_url) == before  # untouched


@pytest.mark.parametrize(
    ("source", "dest", "status", "message"),
    [
        ("missing.db", "new.db", 66, "no database at missing.db"),
        ("same.db", "same.db", 64, "SRC and DST are both same.db"),
        ("a.db", "mysql://x@y/z", 64, "unknown database URL scheme 'mysql'"),
    ],
)
def test_migrate_refuses_a_wrong_command_line(
    tmp_path: Path, source: str, dest: str, status: int, message: str
) -> None:
    (tmp_path / "same.db").touch()
    result = run_tool("dfsd", "migrate", source, dest, manager="", cwd=tmp_path)
    assert result.returncode == status
    assert message in result.stderr.decode()
    assert not (tmp_path / "new.db").exists()


async def test_a_cluster_moves_from_sqlite_to_postgresql(tmp_path: Path, postgres_url: PostgresURL) -> None:
    """Stop a SQLite cluster, migrate, start the manager on PostgreSQL: every file reads back byte-exact."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_manager()
        for node_id in (100, 101):
            cluster.start_node(node_id)
        payloads = {f"moved/{index}": os.urandom(index * 4099) for index in range(20)}
        async with Client(cluster.address) as client:
            for name, payload in payloads.items():
                await client.put(name, payload)
            upload = await client.create_upload("b/unfinished", "alice")
            first = await client.put_part(upload.upload_id, 1, b"begun on SQLite, ", owner="alice")
        cluster.stop()
        status, _, err = migrate(tmp_path / "manager.db", postgres_url)
        assert status == 0, err
        cluster.start_manager("--db", postgres_url.url)
        for node_id in (100, 101):
            cluster.start_node(node_id)
        async with Client(cluster.address) as client:
            for name, payload in payloads.items():
                assert await client.read(name) == payload, name
            await client.put("after", b"a new file gets a new id")
            assert await client.expire_uploads(3600.0) == []  # the upload and its part survive the sweep
            second = await client.put_part(upload.upload_id, 2, b"completed on PostgreSQL", owner="alice")
            await client.complete_upload(upload.upload_id, [(1, first), (2, second)], owner="alice")
            assert await client.read("b/unfinished") == b"begun on SQLite, completed on PostgreSQL"
            ids = [info async for info in client.list()]
        assert len({info.name for info in ids}) == len(payloads) + 2
        recorded = await contents(postgres_url)
        on_disk = set().union(*(cluster.ids_on_disk(node_id) for node_id in cluster.nodes))
        assert on_disk == {row[0] for row in recorded[0]["files"]}
    finally:
        cluster.stop()

"""Multipart uploads kept by the manager (``create_upload`` ... ``complete_upload``): records in the metadata store,
parts' bytes in files no listing shows, completion on one node; through real processes, on SQLite and on PostgreSQL,
behind one gateway or several."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from dfsd.protocol import BadRequest, FileNotFound, part_prefix
from dfsd.protocol.messages import Ok, PutPart
from gateway_live import ALICE, LiveGateway, write_credentials
from harness import LocalCluster

from dfsd.client import BucketNotYours, Client, InvalidPart, NoSuchUpload
from dfsd.manager.store import PostgresURL

MIB = 1024 * 1024


async def hidden_files(client: Client) -> int:
    """Stored files that no listing shows: the uploads' parts."""
    return (await client.status()).files - len([info async for info in client.list()])


async def test_parts_are_hidden_and_only_multipart_requests_reach_them(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        upload = await client.create_upload("b/obj", "alice", meta={"content-type": "text/plain"})
        first = os.urandom(100_000)
        assert await client.put_part(upload.upload_id, 1, first, owner="alice") == hashlib.md5(first).digest()
        assert [info async for info in client.list()] == []  # dfs-ls shows no part
        assert [info async for info in client.list(".multipart/")] == []
        assert await hidden_files(client) == 1
        assert (await client.upload(upload.upload_id)).meta == {"content-type": "text/plain"}
        assert [u.upload_id async for u in client.uploads("b/")] == [upload.upload_id]

        with pytest.raises(NoSuchUpload):  # the parts' namespace takes files only for an upload in progress
            await client.put(part_prefix("no-such-upload") + "1", b"x")
        with pytest.raises(BadRequest):  # ... and deletes none: an upload's parts go with the upload
            await client.delete(part_prefix(upload.upload_id) + "anything")
        with pytest.raises(BadRequest):
            await client.compose("b/other", [part_prefix(upload.upload_id) + "anything"])
        with pytest.raises(BucketNotYours):
            await client.put_part(upload.upload_id, 2, b"x", owner="bob")

        second = os.urandom(1000)
        await client.put_part(upload.upload_id, 2, b"a first attempt, replaced", owner="alice")
        await client.put_part(upload.upload_id, 2, second, owner="alice")  # sent again: the last one wins
        assert await hidden_files(client) == 2  # the first attempt's bytes are gone
        parts = [part async for part in client.parts(upload.upload_id)]
        assert [(part.number, part.size, part.md5) for part in parts] == [
            (1, len(first), hashlib.md5(first).digest()),
            (2, len(second), hashlib.md5(second).digest()),
        ]

        with pytest.raises(InvalidPart):
            await client.complete_upload(upload.upload_id, [(1, bytes(16))], owner="alice")
        chosen = [(part.number, part.md5) for part in parts]
        stored = await client.complete_upload(upload.upload_id, chosen, owner="alice")
        assert stored.sha256 == hashlib.sha256(first + second).digest()
        assert await client.read("b/obj") == first + second
        assert (await client.stat("b/obj")).meta == {"content-type": "text/plain"}  # the upload's own
        assert [info.name async for info in client.list()] == ["b/obj"]
        assert await hidden_files(client) == 0
        with pytest.raises(NoSuchUpload):
            await client.upload(upload.upload_id)
        with pytest.raises(NoSuchUpload):
            await client.put_part(upload.upload_id, 3, b"late", owner="alice")

        aborted = await client.create_upload("b/gone", "alice")
        await client.put_part(aborted.upload_id, 1, b"bytes", owner="alice")
        with pytest.raises(BucketNotYours):
            await client.abort_upload(aborted.upload_id, owner="bob")
        await client.abort_upload(aborted.upload_id, owner="alice")
        assert await hidden_files(client) == 0
        with pytest.raises(NoSuchUpload):
            await client.abort_upload(aborted.upload_id, owner="alice")
    cluster.wait_no_orphans()


async def test_malformed_multipart_requests_are_bad_requests(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        with pytest.raises(BadRequest, match="parts of multipart uploads"):
            await client.create_upload(part_prefix("x") + "obj", "alice")
        upload = await client.create_upload("b/obj", "alice")
        other = await client.create_upload("b/other", "alice")
        with pytest.raises(BadRequest, match="part numbers run from 1"):
            await client.put_part(upload.upload_id, 10_001, b"x", owner="alice")
        elsewhere = part_prefix(other.upload_id) + "00001.x"
        await client.put(elsewhere, b"x")  # the other upload's part, unrecorded
        with pytest.raises(BadRequest, match="are files named"):
            await client._call(PutPart(upload.upload_id, "alice", 1, elsewhere, bytes(16)), Ok)
        with pytest.raises(BadRequest, match="an MD5 is 16 bytes"):
            await client._call(PutPart(other.upload_id, "alice", 1, elsewhere, bytes(15)), Ok)
        with pytest.raises(FileNotFound):
            await client._call(
                PutPart(upload.upload_id, "alice", 1, part_prefix(upload.upload_id) + "none", bytes(16)), Ok
            )
        md5 = await client.put_part(upload.upload_id, 1, b"x", owner="alice")
        for chosen in ([], [(1, md5), (1, md5)]):
            with pytest.raises(BadRequest):
                await client.complete_upload(upload.upload_id, chosen, owner="alice")
        with pytest.raises(BucketNotYours):
            await client.complete_upload(upload.upload_id, [(1, md5)], owner="bob")
        await client.abort_upload(other.upload_id, owner="alice")  # its unrecorded file goes with it
        await client.abort_upload(upload.upload_id, owner="alice")
        assert await hidden_files(client) == 0


async def test_expiry_aborts_old_uploads_with_their_parts(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        old = await client.create_upload("b/old", "alice")
        await client.put_part(old.upload_id, 1, b"left behind", owner="alice")
        assert await client.expire_uploads(3600.0) == []  # not old enough
        assert [upload.upload_id for upload in await client.expire_uploads(0.0)] == [old.upload_id]
        assert [upload async for upload in client.uploads()] == [] and await hidden_files(client) == 0
    cluster.wait_no_orphans()


async def test_expiry_sweeps_the_parts_an_abort_cut_short_by_a_crash_left(bare_cluster: LocalCluster) -> None:
    """An abort removes the records, then the files: a manager killed in between leaves part files that no upload
    names. The state is made by hand (the abort's own transaction, run on the stopped manager's database)."""
    cluster = bare_cluster
    cluster.start_node(100)
    async with Client(cluster.address) as client:
        upload = await client.create_upload("b/obj", "alice")
        for number in (1, 2):
            await client.put_part(upload.upload_id, number, os.urandom(1000), owner="alice")
        kept = await client.create_upload("b/kept", "alice")
        await client.put_part(kept.upload_id, 1, b"still wanted", owner="alice")
    assert cluster.manager is not None
    cluster.manager.kill()
    with contextlib.closing(sqlite3.connect(cluster.root / "manager.db")) as db, db:
        db.execute("DELETE FROM multipart_uploads WHERE upload_id = ?", (upload.upload_id,))
        db.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (upload.upload_id,))
    cluster.start_manager()
    async with Client(cluster.address) as client:
        assert await hidden_files(client) == 3  # the dead upload's two parts are still stored
        assert await client.expire_uploads(3600.0) == []  # no upload is old enough: only the sweep works
        assert await hidden_files(client) == 1
        assert [part.number async for part in client.parts(kept.upload_id)] == [1]
    cluster.wait_no_orphans()


async def test_list_after_resumes_a_listing(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for name in ("a", "b/1", "b/2", "c"):
            await client.put(name, b"x")
        assert [info.name async for info in client.list(after="b/1")] == ["b/2", "c"]
        assert [info.name async for info in client.list("b/", after="a")] == ["b/1", "b/2"]
        assert [info.name async for info in client.list("b/", after="b/2")] == []


def test_multipart_uploads_survive_manager_and_gateway_restarts(bare_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = bare_cluster
    cluster.start_node(100)
    users = write_credentials(tmp_path / "users.toml", ALICE)
    gateway = LiveGateway(cluster, cluster.start_gateway(credentials=users))
    s3, bucket = gateway.s3(), gateway.bucket()
    first, second = os.urandom(5 * MIB), os.urandom(1000)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k", ContentType="video/mp4")["UploadId"]
    etag1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=first)["ETag"]

    gateway.daemon.terminate()
    assert cluster.manager is not None
    cluster.manager.terminate()
    cluster.start_manager()
    cluster.wait_for(lambda status: all(node.up for node in status.nodes), "the node back")
    gateway = LiveGateway(cluster, cluster.start_gateway(credentials=users))
    s3 = gateway.s3()

    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload_id]
    listed = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [(part["PartNumber"], part["ETag"], part["Size"]) for part in listed] == [(1, etag1, len(first))]
    etag2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=second)["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]},
    )
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["ContentType"] == "video/mp4" and got["Body"].read() == first + second
    assert gateway.hidden_files() == 0
    cluster.wait_no_orphans()


def test_an_upload_begun_through_one_gateway_completes_through_another(
    tmp_path: Path, postgres_url: PostgresURL
) -> None:
    """Two managers on one PostgreSQL database, a gateway in front of each: the upload lives in the database."""
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager()
        cluster.start_manager(number=1)
        for node_id in (100, 101):
            cluster.start_node(node_id)
        users = write_credentials(tmp_path / "users.toml", ALICE)
        via_a = LiveGateway(cluster, cluster.start_gateway(credentials=users))
        via_b = LiveGateway(cluster, cluster.start_gateway("--manager", cluster.managers[1].address, credentials=users))
        a, b, bucket = via_a.s3(), via_b.s3(), via_a.bucket()
        parts = {1: os.urandom(5 * MIB), 2: os.urandom(5 * MIB), 3: b"tail"}
        upload_id = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        etags = {1: a.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=parts[1])["ETag"]}
        assert [u["UploadId"] for u in b.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload_id]
        for number in (2, 3):
            etags[number] = b.upload_part(
                Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=parts[number]
            )["ETag"]
        assert [part["PartNumber"] for part in a.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]] == [
            1,
            2,
            3,
        ]
        b.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
        )
        assert a.get_object(Bucket=bucket, Key="k")["Body"].read() == parts[1] + parts[2] + parts[3]
        assert a.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert sum(len(ids) for ids in cluster.records().values()) == 1  # the object; no part is left
        cluster.wait_no_orphans()
    finally:
        cluster.stop()


async def test_compose_parts_stay_whole_while_the_rebalancer_moves_files(bare_cluster: LocalCluster) -> None:
    """A node joins while an upload completes: the rebalancer moves files to it, but no part under the build, so the
    completion stores the right bytes."""
    await complete_while_rebalancing(bare_cluster, bare_cluster.address)


async def test_the_coordinator_moves_no_part_of_an_upload_completing_elsewhere(
    tmp_path: Path, postgres_url: PostgresURL
) -> None:
    """The same with two managers: the coordinator (manager 0) rebalances while manager 1 completes; the database
    tells it which parts are being joined, and it moves none of them."""
    cluster = LocalCluster(tmp_path, database=postgres_url)
    try:
        cluster.start_manager()
        cluster.start_manager(number=1)
        await complete_while_rebalancing(cluster, cluster.managers[1].address)
    finally:
        cluster.stop()


async def complete_while_rebalancing(cluster: LocalCluster, through: str) -> None:
    cluster.start_node(100)
    parts = [os.urandom(256 * 1024 + index) for index in range(40)]
    async with Client(through) as client:
        upload = await client.create_upload("b/joined", "alice")
        md5s = [await client.put_part(upload.upload_id, n, part, owner="alice") for n, part in enumerate(parts, 1)]
        for index in range(40):
            await client.put(f"other/{index}", os.urandom(1000))
        cluster.start_node(101, wait=False)
        cluster.wait_for(lambda status: status.rebalance.running or status.rebalance.moved, "a rebalance")
        stored = await client.complete_upload(upload.upload_id, list(enumerate(md5s, 1)), owner="alice")
        whole = b"".join(parts)
        assert stored.sha256 == hashlib.sha256(whole).digest()
        assert await client.read("b/joined") == whole
        # A round whose every move failed (its files were the parts, deleted by the completion) ends the rebalance:
        # ask for another.
        await client.rebalance()
    cluster.wait_balanced()
    cluster.wait_no_orphans()

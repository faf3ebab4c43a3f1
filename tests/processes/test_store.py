"""The metadata store, on both backends: every test here runs once on SQLite and once on a real PostgreSQL server.

No process of dfsd and no socket of ours: the store is called directly, as the manager calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from dfsd.protocol import NameExists, ServersUnavailable
from postgres import PostgresServer

from dfsd.manager.lookups import MAX_GROUP
from dfsd.manager.store import (
    COMPLETION_LEASE,
    ID_BLOCK,
    Location,
    MetadataStore,
    NodeRecord,
    PartRecord,
    PostgresURL,
    SchemaTooNew,
    UploadRecord,
    _prefix_end,
    database_location,
)
from dfsd.manager.store_postgres import _SESSION as MANAGER_SESSION
from dfsd.manager.store_postgres import DB_TIMEOUT
from dfsd.manager.store_postgres import SCHEMA_STEPS as POSTGRES_STEPS
from dfsd.manager.store_sqlite import SCHEMA_STEPS as SQLITE_STEPS


async def test_store_reserve_commit_release(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        first = await store.reserve("a", 1)
        with pytest.raises(NameExists):
            await store.reserve("a", 1)
        assert await store.find("a") is None  # a reservation is invisible
        assert await store.uploading() == {first}
        await store.commit(first, "a", node=5, size=3, sha256=b"h" * 32, created=1.0)
        await store.release("a")
        with pytest.raises(NameExists):
            await store.reserve("a", 1)  # now the record holds the name
        record = await store.find("a")
        assert record is not None and (record.id, record.node, record.size) == (first, 5, 3)
        second = await store.reserve("b", 1)
        await store.release("b")
        third = await store.reserve("b", 1)
        assert third > second  # ids are never reused
        assert await store.usage_by_node() == {5: (1, 3)}
        removed = await store.remove("a")
        assert removed is not None and removed.id == first
        assert await store.remove("a") is None
    finally:
        await store.close()


async def test_file_ids_are_never_reused_across_restarts(db_location: Location) -> None:
    """Ids are handed out from memory in blocks recorded ahead: a restart (or a crash) skips the rest of the block,
    so bytes an abandoned upload left on a node can never be taken for a later file's."""
    store = await MetadataStore.open(db_location)
    handed_out = [await store.reserve(f"f{index}", 1) for index in range(ID_BLOCK + 5)]
    await store.commit(handed_out[0], "f0", 1, 1, b"h" * 32, 0.0)
    await store.close()  # the other reservations die with the process, as in a crash
    store = await MetadataStore.open(db_location)
    try:
        assert await store.reserve("after", 1) > max(handed_out)
    finally:
        await store.close()


async def test_only_one_of_many_racing_reservations_wins(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        results = await asyncio.gather(*(store.reserve("same", 1) for _ in range(20)), return_exceptions=True)
        assert sum(isinstance(result, int) for result in results) == 1
        assert sum(isinstance(result, NameExists) for result in results) == 19
    finally:
        await store.close()


async def test_a_name_stored_after_an_upload_took_it_fails_that_uploads_commit(db_location: Location) -> None:
    """On PostgreSQL an upload's hold looks its name up as of its statement's start, so a file of that name committed
    through another manager just then is seen by neither: the upload's commit must refuse the name (here the other
    commit is one that claimed no name, as it lands in the database), and the file stored first stays."""
    store = await MetadataStore.open(db_location)
    try:
        late = await store.reserve("taken", 1)
        other = await store.reserve("taken", 2, replace=True)  # an upload that claimed no name: no hold looks at it
        await store.commit(other, "taken", node=2, size=1, sha256=b"o" * 32, created=1.0)
        await store.release("taken", other)
        with pytest.raises(NameExists):
            await store.commit(late, "taken", node=1, size=2, sha256=b"l" * 32, created=2.0)
        await store.release("taken")
        record = await store.find("taken")
        assert record is not None and record.id == other
        assert await store.uploading() == set()
    finally:
        await store.close()


async def _stored(store: MetadataStore, name: str, node: int = 5) -> int:
    """Store a file ``name`` as an upload would: reserve, commit, release; returns its id."""
    file_id = await store.reserve(name, node)
    await store.commit(file_id, name, node=node, size=len(name), sha256=b"h" * 32, created=1.0)
    await store.release(name)
    return file_id


async def test_writes_committed_together_each_get_their_own_answer(db_location: Location) -> None:
    """Many uploads and deletes at once share group commits (on PostgreSQL the writes of one statement share one
    round trip, their rows told apart by key): each commit records its own file and ends its own reservation, and of
    two deletes of one name exactly one gets the file."""
    store = await MetadataStore.open(db_location)
    try:
        names = [f"g/{index}" for index in range(60)]
        ids = dict(zip(names, await asyncio.gather(*(_stored(store, name) for name in names)), strict=True))
        assert len(set(ids.values())) == len(names)
        assert await store.uploading() == set()  # no reservation is left, in memory or in the database
        for name in names:
            record = await store.find(name)
            assert record is not None and record.id == ids[name]
        removed = await asyncio.gather(*(store.remove(name) for name in names + names))
        for name in names:
            answers = [record for record in removed if record is not None and record.name == name]
            assert [record.id for record in answers] == [ids[name]]
        assert removed.count(None) == len(names)
    finally:
        await store.close()


async def test_lookups_asked_together_each_find_their_own_file(db_location: Location) -> None:
    """Many finds at once (on PostgreSQL they share queries, ``lookups.py``): each gets its own name's file, or None,
    whether its name is asked once, several times or not stored at all; more at once than one query takes too."""
    store = await MetadataStore.open(db_location)
    try:
        ids = {f"f/{index}": await _stored(store, f"f/{index}", node=index) for index in range(40)}
        asked = [f"f/{index % 40}" for index in range(200)] + [f"absent/{index}" for index in range(MAX_GROUP)]
        found = await asyncio.gather(*(store.find(name) for name in asked))
        for name, record in zip(asked, found, strict=True):
            if name in ids:
                assert record is not None and (record.name, record.id) == (name, ids[name])
                assert record.node == int(name.removeprefix("f/"))
            else:
                assert record is None
    finally:
        await store.close()


async def test_point_lookups_see_every_write_at_once(db_location: Location) -> None:
    """A bucket, an upload and a part are looked up as a file is (on SQLite through the event loop's own reader, not
    the writer's connection): each lookup right after a write sees it, so a deleted bucket or a forgotten upload is
    never answered in its old state."""
    store = await MetadataStore.open(db_location)
    try:
        assert await store.bucket("b") is None
        assert await store.create_bucket("b", "alice", 1.0)
        found = await store.bucket("b")
        assert found is not None and (found.name, found.owner) == ("b", "alice")
        await store.create_upload(UploadRecord("u1", "b/key", "alice", 10.0, None, None))
        part = PartRecord("u1", 1, ".multipart/u1/00001.a", 7, 5, b"m" * 16, 1.0)
        assert await store.record_part(part, stale_before=0.0) == (True, None)
        assert await store.find_part("u1", 1) == part
        assert await store.forget_upload("u1", None)
        assert await store.find_upload("u1") is None and await store.find_part("u1", 1) is None
        assert await store.delete_bucket("b", "alice")
        assert await store.bucket("b") is None
    finally:
        await store.close()


async def test_lookups_after_a_delete_through_another_manager_do_not_find_the_file(postgres_url: PostgresURL) -> None:
    """Two managers' stores on one PostgreSQL database: once one has deleted (or replaced) a file, a find asked
    through the other afterwards never sees the old row, even while that other is busy with finds sharing queries."""
    first = await MetadataStore.open(postgres_url)
    second = await MetadataStore.open(postgres_url)
    try:
        for index in range(30):
            await _stored(first, f"d/{index}")
        done = asyncio.Event()

        async def keep_finding() -> None:
            while not done.is_set():
                await asyncio.gather(*(second.find(f"d/{index}") for index in range(30)))

        async with asyncio.TaskGroup() as group:
            group.create_task(keep_finding())
            for index in range(30):
                name = f"d/{index}"
                if index % 2:
                    assert await first.remove(name) is not None
                    assert await second.find(name) is None
                else:
                    replacement = await first.reserve(name, 6, replace=True)
                    await first.commit_replacing(replacement, name, 6, 1, b"n" * 32, 2.0)
                    await first.release(name, replacement)
                    record = await second.find(name)
                    assert record is not None and (record.id, record.node) == (replacement, 6)
            done.set()
    finally:
        await first.close()
        await second.close()


async def test_a_manager_frozen_mid_transaction_does_not_stop_the_others_renewals(postgres_url: PostgresURL) -> None:
    """A manager frozen between two statements of a transaction (SIGSTOP, a stalled host) keeps its connection alive
    and its row locks held: one on ``sole_lease`` (a write's fence, a renewal) would stop every other manager's
    renewals for as long as it stays frozen. The server ends such a transaction of a manager's session after
    DB_TIMEOUT, so another's renewal (``FOR UPDATE``) waits that long at most."""
    store = await MetadataStore.open(postgres_url)  # the schema, with its sole_lease row
    await store.close()
    frozen = await asyncpg.connect(postgres_url.url, server_settings=MANAGER_SESSION)
    other = await asyncpg.connect(postgres_url.url, server_settings=MANAGER_SESSION)
    try:
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT generation FROM sole_lease FOR SHARE")  # as a write's fence leaves it
        await asyncio.wait_for(other.execute("SELECT generation FROM sole_lease FOR UPDATE"), DB_TIMEOUT + 10)
    finally:
        frozen.terminate()
        await other.close()


async def test_a_hold_lost_in_a_database_crash_fails_its_commit_with_error_1(tmp_path: Path) -> None:
    """An upload's hold commits without waiting for its flush (``synchronous_commit = off``), so a crash of the
    database may lose it after ``reserve`` returned. Its upload's commit then fails with error 1 (nothing is
    acknowledged), the name is free again, and the upload is no longer in flight, so its bytes are an orphan that the
    coordinator removes. The server is the test's own, stopped as by a crash; whether its recovery brings the hold
    back depends on whether the WAL writer had written it out by then, so the test deletes the row a lost hold would
    have left missing."""
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database()
        store = await MetadataStore.open(url)
        try:
            file_id = await store.reserve("lost", 5)
            server.halt()
            server.resume()
            server.execute(f"DELETE FROM uploads WHERE file_id = {file_id}", database=urlsplit(url.url).path[1:])
            for _ in range(50):  # the first statements may still meet the connections the restart cut
                try:
                    await store.commit(file_id, "lost", node=5, size=3, sha256=b"h" * 32, created=1.0)
                except ServersUnavailable as err:
                    if "lost its reservation" in err.message:
                        break
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the commit of a lost hold never failed as such")
            await store.release("lost")
            assert await store.find("lost") is None
            assert file_id not in await store.uploading()
            await _stored(store, "lost")  # the name is free again
        finally:
            await store.close()
    finally:
        server.stop()


async def test_a_commit_after_another_manager_dropped_its_reservation_stores_nothing_repro(
    postgres_url: PostgresURL,
) -> None:
    """A manager out of touch with the database for longer than its lease (frozen, cut off) finds, when it commits,
    that another manager has dropped its uploads' reservations as a dead manager's, after which the coordinator may
    have removed their bytes as orphans: the commit fails with error 1 instead of acknowledging a file with no bytes."""
    frozen = await MetadataStore.open(postgres_url)
    other = await MetadataStore.open(postgres_url)
    try:
        await _stored(frozen, "replaced")
        new = await frozen.reserve("new", 5)
        replacing = await frozen.reserve("replaced", 6, replace=True)
        kept = await other.reserve("kept", 5)
        await other.tidy_reservations(manager_lease=0.0)  # the frozen manager never renewed its lease
        assert await other.uploading() == {kept}
        with pytest.raises(ServersUnavailable, match="lost its reservation"):
            await frozen.commit(new, "new", node=5, size=3, sha256=b"h" * 32, created=1.0)
        with pytest.raises(ServersUnavailable, match="lost its reservation"):
            await frozen.commit_replacing(replacing, "replaced", 6, 3, b"n" * 32, 2.0)
        assert await other.find("new") is None
        record = await other.find("replaced")
        assert record is not None and record.id != replacing  # the stored file is still the old one
        await other.commit(kept, "kept", node=5, size=3, sha256=b"k" * 32, created=1.0)  # a live reservation commits
        await other.release("kept")
        assert await frozen.find("kept") is not None and await other.uploading() == set()
    finally:
        await frozen.close()
        await other.close()


async def test_counts_asked_together_see_every_file_and_upload_before_they_asked(postgres_url: PostgresURL) -> None:
    """Placement's files per node, which every put asks for while another manager is up, share queries as lookups do:
    a count asked through one manager counts every file committed, and every upload reserved, through another before
    it was asked, even while that manager is busy with counts sharing queries."""
    first = await MetadataStore.open(postgres_url)
    second = await MetadataStore.open(postgres_url)
    try:
        done = asyncio.Event()

        async def keep_counting() -> None:
            while not done.is_set():
                await asyncio.gather(*(second.files_per_node() for _ in range(10)))

        expected: dict[int, int] = {}
        async with asyncio.TaskGroup() as group:
            group.create_task(keep_counting())
            for index in range(24):
                node = index % 3
                if index % 4:
                    await _stored(first, f"c/{index}", node)
                else:
                    await first.reserve(f"c/{index}", node)  # in flight: the other manager counts it too
                expected[node] = expected.get(node, 0) + 1
                assert await second.files_per_node() == expected
            done.set()
    finally:
        await first.close()
        await second.close()


async def test_listing_by_prefix_in_byte_order(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    names = ["a", "a/b", "a/c", "ab", "b", "a\U0010ffff", "a\ud7ff", "é", "日本"]
    try:
        for name in names:
            if "\ud7ff" in name:
                continue
            await store.commit(await store.reserve(name, 1), name, 1, 1, b"", 0.0)
        listed = [record.name for record in await store.list_files("a", None, 100)]
        assert listed == sorted(n for n in names if n.startswith("a") and "\ud7ff" not in n)
        assert [record.name for record in await store.list_files("a", "a/b", 2)] == ["a/c", "ab"]
        assert [record.name for record in await store.list_files("", None, 100)][-2:] == ["é", "日本"]
    finally:
        await store.close()


async def test_multipart_records_survive_a_reopening(db_location: Location) -> None:
    """An upload and its parts are rows: a part recorded again replaces the old one (which is returned, for its file to
    be removed), a claimed upload takes no part and no abort until its claim runs out, and all of it survives the
    store being closed and opened again (a restart)."""
    store = await MetadataStore.open(db_location)
    try:
        await store.create_upload(UploadRecord("u1", "b/key", "alice", 10.0, {"content-type": "text/plain"}, None))
        await store.create_upload(UploadRecord("u0", "b/key", "alice", 20.0, None, None))
        await store.create_upload(UploadRecord("u2", "b/other", "bob", 30.0, None, None))
        first = PartRecord("u1", 2, ".multipart/u1/00002.a", 7, 5, b"m" * 16, 1.0)
        assert await store.record_part(first, stale_before=0.0) == (True, None)
        again = PartRecord("u1", 2, ".multipart/u1/00002.b", 8, 6, b"n" * 16, 2.0)
        assert await store.record_part(again, stale_before=0.0) == (True, first)
        assert await store.record_part(PartRecord("u1", 1, "p1", 9, 1, b"o" * 16, 3.0), stale_before=0.0)
        assert (await store.record_part(PartRecord("gone", 1, "p", 1, 1, b"o" * 16, 3.0), 0.0)) == (False, None)
    finally:
        await store.close()
    store = await MetadataStore.open(db_location)
    try:
        assert [part.number for part in await store.list_parts("u1", 0, 10)] == [1, 2]
        assert await store.list_parts("u1", 1, 10) == [again]
        upload = await store.find_upload("u1")
        assert upload is not None and upload.meta == {"content-type": "text/plain"} and upload.completing is None
        assert [u.upload_id for u in await store.list_uploads("b/", None, 10)] == ["u0", "u1", "u2"]
        assert [u.upload_id for u in await store.list_uploads("b/k", ("b/key", "u0"), 10)] == ["u1"]
        assert [u.upload_id for u in await store.uploads_begun_before(25.0, 10)] == ["u1", "u0"]
        now = 100_000.0
        assert await store.claim_upload("u1", now, now - COMPLETION_LEASE)
        assert not await store.claim_upload("u1", now + 1, now + 1 - COMPLETION_LEASE)  # held
        assert await store.record_part(first, stale_before=now - COMPLETION_LEASE) == (False, None)
        assert not await store.forget_upload("u1", now - COMPLETION_LEASE)  # no abort under a completion
        later = now + COMPLETION_LEASE + 1  # the claim ran out: its manager died
        assert await store.claim_upload("u1", later, later - COMPLETION_LEASE)
        await store.unclaim_upload("u1")
        assert await store.forget_upload("u1", later - COMPLETION_LEASE)
        assert await store.find_upload("u1") is None and await store.list_parts("u1", 0, 10) == []
        assert not await store.forget_upload("u1", None)
    finally:
        await store.close()


async def test_listings_leave_out_the_parts_of_multipart_uploads(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        for name in ["-", ".a", ".multipart/u/1", ".multipart/v/1", ".n", "z"]:
            await store.commit(await store.reserve(name, 1), name, 1, 1, b"", 0.0)
        assert [record.name for record in await store.list_files("", None, 100)] == ["-", ".a", ".n", "z"]
        assert await store.list_files(".multipart/", None, 100) == []
        assert [record.name for record in await store.list_files(".", ".a", 1)] == [".n"]
        hidden = await store.list_files(".multipart/", None, 100, parts=True)
        assert [record.name for record in hidden] == [".multipart/u/1", ".multipart/v/1"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("prefix", "end"), [("a", "b"), ("ab", "ac"), ("a\U0010ffff", "b"), ("\U0010ffff", None), ("\ud7ff", "\ue000")]
)
def test_prefix_end(prefix: str, end: str | None) -> None:
    assert _prefix_end(prefix) == end


async def test_nodes_are_saved_updated_and_forgotten(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        await store.save_node(NodeRecord(7, "10.0.0.7", 9007, 10**12, 10**11, 1.5, False))
        await store.save_node(NodeRecord(3, "10.0.0.3", 9003, 100, 50, 2.5, False))
        await store.save_node(NodeRecord(7, "10.0.0.8", 9008, 10**12, 10**10, 3.5, True))  # the same id: an update
        # ... which keeps the drain flag: every manager with a session saves the node, only a drain changes the flag
        assert [node.draining for node in await store.nodes()] == [False, False]
        await store.set_draining(7, True)
        assert await store.nodes() == [
            NodeRecord(3, "10.0.0.3", 9003, 100, 50, 2.5, False),
            NodeRecord(7, "10.0.0.8", 9008, 10**12, 10**10, 3.5, True),
        ]
        await store.forget_node(3)
        assert [node.id for node in await store.nodes()] == [7]
    finally:
        await store.close()


async def test_lost_files_moves_and_walks_over_a_node(db_location: Location) -> None:
    store = await MetadataStore.open(db_location)
    try:
        ids = []
        for index in range(6):
            file_id = await store.reserve(f"f{index}", 1)
            await store.commit(file_id, f"f{index}", 1, 10 + index, bytes(32), 1.0)
            await store.release(f"f{index}")
            ids.append(file_id)
        under_way = await store.reserve("still uploading", 1)
        await store.set_lost(ids[:2], 5.0)
        assert await store.lost_files(1) == (2, ["f0"])
        assert await store.lost_by_node() == {1: 2}
        assert await store.ids_on_node(1) == (set(ids), set(ids[:2]), {under_way})
        assert await store.unrecorded_on(1, [*ids, under_way, 10**9]) == {10**9}
        assert [record.id for record in await store.movable(1, 2, exclude={ids[2]})] == ids[3:5]
        assert await store.try_coordinate()  # only the coordinator moves files: on PostgreSQL, relocate needs its lock
        assert await store.relocate(ids[3], source=1, target=2)
        assert not await store.relocate(ids[3], source=1, target=2)  # it is no longer on node 1
        walked = await store.files_on_node(1, after_id=ids[0], limit=3)
        assert [record.id for record in walked] == [ids[1], ids[2], ids[4]]
        assert await store.usage_by_node() == {1: (5, 10 + 11 + 12 + 14 + 15), 2: (1, 13)}
        await store.set_lost(ids[:2], None)
        assert await store.lost_files(10) == (0, [])
        record = await store.find("f5")
        assert record is not None
        assert (record.size, record.sha256, record.created, record.lost) == (15, bytes(32), 1.0, None)
    finally:
        await store.close()


async def test_a_database_of_a_newer_schema_is_refused(db_location: Location) -> None:
    await (await MetadataStore.open(db_location)).close()
    await _execute(db_location, "UPDATE schema_version SET version = 999")
    with pytest.raises(SchemaTooNew, match="schema version 999"):
        await MetadataStore.open(db_location)


async def test_reopening_keeps_the_schema_version(db_location: Location) -> None:
    await (await MetadataStore.open(db_location)).close()
    await (await MetadataStore.open(db_location)).close()
    latest = len(POSTGRES_STEPS) if isinstance(db_location, PostgresURL) else len(SQLITE_STEPS)
    assert await _execute(db_location, "SELECT version FROM schema_version") == [(latest,)]


async def test_a_postgresql_database_of_version_1_is_upgraded(postgres_url: PostgresURL) -> None:
    """Version 4 adds the tables that several managers share: uploads in flight and the managers themselves."""
    conn = await asyncpg.connect(postgres_url.url)
    try:
        await conn.execute(POSTGRES_STEPS[0])  # several statements: only the simple query protocol runs them
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1)"
        )
    finally:
        await conn.close()
    await (await MetadataStore.open(postgres_url)).close()
    assert await _execute(postgres_url, "SELECT version FROM schema_version") == [(len(POSTGRES_STEPS),)]
    assert await _execute(postgres_url, "SELECT count(*) FROM uploads") == [(0,)]


async def test_a_database_from_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    """SQLite databases written before the schema version was recorded are version 1, and open as they are (then
    upgraded to the current version)."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, node INTEGER NOT NULL, "
            "size INTEGER NOT NULL, sha256 BLOB NOT NULL, created REAL NOT NULL, lost REAL);"
            "CREATE TABLE ids (next INTEGER NOT NULL); INSERT INTO ids VALUES (2048);"
            "CREATE TABLE nodes (id INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, "
            "capacity INTEGER NOT NULL, free INTEGER NOT NULL, last_seen REAL NOT NULL, "
            "draining INTEGER NOT NULL DEFAULT 0);"
            "INSERT INTO files VALUES (2000, 'old', 4, 3, x'00', 1.0, NULL);"
        )
    store = await MetadataStore.open(path)
    try:
        record = await store.find("old")
        assert record is not None and record.id == 2000
        assert await store.reserve("new", 1) >= 2048
    finally:
        await store.close()
    assert await _execute(path, "SELECT version FROM schema_version") == [(len(SQLITE_STEPS),)]


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("dfs-data/manager.db", Path("dfs-data/manager.db")),
        ("postgresql://dfsd:secret@db.example:5432/dfsd", PostgresURL("postgresql://dfsd:secret@db.example:5432/dfsd")),
        ("postgres://dfsd@db.example/dfsd", PostgresURL("postgres://dfsd@db.example/dfsd")),
    ],
)
def test_database_location(text: str, location: Location) -> None:
    assert database_location(text) == location


def test_database_location_refuses_other_urls() -> None:
    with pytest.raises(ValueError, match="postgresql://USER"):
        database_location("mysql://root@localhost/dfsd")


def test_a_postgresql_url_is_shown_without_its_password() -> None:
    url = PostgresURL("postgresql://dfsd:s3cret@db.example:5432/dfsd")
    assert str(url) == "postgresql://dfsd:***@db.example:5432/dfsd"


async def _execute(location: Location, sql: str) -> list[tuple[object, ...]]:
    """Run one statement on the store's database behind its back, as an operator would."""
    if isinstance(location, PostgresURL):
        conn = await asyncpg.connect(location.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()
    with contextlib.closing(sqlite3.connect(location)) as db:
        rows = db.execute(sql).fetchall()
        db.commit()
        return rows

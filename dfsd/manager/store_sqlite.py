"""The metadata store on SQLite: one file, one manager, nothing to run beside it (the default).

The database runs in WAL mode with synchronous=FULL: a commit is on disk before the client hears ``stored``. Writes go
through one plain sqlite3 connection in a thread of its own, a whole group commit (BEGIN, every statement, COMMIT) in
one trip there: a trip costs the event loop two thread switches, and one per statement made a batch of uploads pay
several. The hot lookups (``_lookup``: a file by name, a bucket, an upload or a part) read through another plain
connection in the event loop's thread: a point query on an index takes microseconds, less than a hop to a thread. WAL
lets that reader see every committed write at once. Other reads, and the schema's set-up, go through aiosqlite.
(The bucket's lookup went through aiosqlite's thread until a profile of 4 KiB GETs through the gateway found the
manager's main thread and aiosqlite's making about 600 futex calls a second there and none under the CBOR client's
GETs: the gateway re-checks its bucket every BUCKET_TRUST_SECONDS, 16 connections at once.)

(Measured and not kept, on a busy machine, 1 KiB puts from 16 clients: a group commit of puts as one multi-row INSERT,
which hands the GIL back twice in the writer's thread instead of about ten times for four puts: that thread's time per
commit stayed the same, median 1.1 to 1.7 ms either way (4 pairs, load average 12 to 14): it is the disk's sync and the
busy CPUs there, not the GIL's hand-backs. Nor did committing in the event loop's thread, with no trip at all: fewer
puts per second in 3 of 3 pairs, 331 against 583, 622 against 969, 443 against 528, the loop standing still through
every sync. Nor did the trip to the writer's thread through ``bulk.in_thread``, whose thread settles the loop's future
itself, instead of ``run_in_executor``: the manager's CPU per put 0.89-1.20 of before, median 1.04, 5 pairs at load
average 5 to 6.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosqlite

from .store import (
    ID_BLOCK,
    MetadataStore,
    NoDatabase,
    Rows,
    Write,
    schema_steps_to_run,
)

# Step i takes a database from schema version i to i + 1. Version 1 is the schema dfsd had before versions were
# recorded, so its step (all IF NOT EXISTS) also adopts such a database as it is.
SCHEMA_STEPS = [
    """
    CREATE TABLE IF NOT EXISTS files (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        node    INTEGER NOT NULL,
        size    INTEGER NOT NULL,
        sha256  BLOB NOT NULL,
        created REAL NOT NULL,
        lost    REAL  -- when its node was found without its bytes; NULL while they are there
    );
    CREATE INDEX IF NOT EXISTS files_by_node ON files (node);
    -- A small partial index keeps status and reconciliation cheap with millions of rows.
    CREATE INDEX IF NOT EXISTS files_lost ON files (node) WHERE lost IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ids (
        next INTEGER NOT NULL  -- one row: no file id at or above this has been handed out
    );
    INSERT INTO ids (next) SELECT coalesce(max(id), 0) + 1 FROM files WHERE NOT EXISTS (SELECT 1 FROM ids);
    CREATE TABLE IF NOT EXISTS nodes (
        id        INTEGER PRIMARY KEY,
        host      TEXT NOT NULL,
        port      INTEGER NOT NULL,
        capacity  INTEGER NOT NULL,
        free      INTEGER NOT NULL,
        last_seen REAL NOT NULL,
        draining  INTEGER NOT NULL DEFAULT 0  -- being retired: its files move to other nodes, it gets no new ones
    );
    """,
    # Version 2: a file's metadata (``put.meta``), as JSON text; NULL when its put carried none.
    "ALTER TABLE files ADD COLUMN meta TEXT",
    # Version 3: buckets, whose objects are the files named ``BUCKET/KEY``.
    """
    CREATE TABLE buckets (
        name    TEXT PRIMARY KEY,
        owner   TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
    # Version 4: multipart uploads in progress and their parts (whose bytes are the files named in ``name``).
    """
    CREATE TABLE multipart_uploads (
        upload_id  TEXT PRIMARY KEY,
        name       TEXT NOT NULL,  -- the file the completed upload becomes
        owner      TEXT NOT NULL,
        initiated  REAL NOT NULL,
        meta       TEXT,  -- JSON, as files.meta
        completing REAL  -- when a completion claimed it; NULL while parts may come
    );
    CREATE INDEX multipart_uploads_by_name ON multipart_uploads (name, upload_id);
    CREATE INDEX multipart_uploads_by_age ON multipart_uploads (initiated);
    CREATE TABLE multipart_parts (
        upload_id TEXT NOT NULL,
        number    INTEGER NOT NULL,
        name      TEXT NOT NULL,  -- the stored file holding its bytes
        file_id   INTEGER NOT NULL,
        size      INTEGER NOT NULL,
        md5       BLOB NOT NULL,
        created   REAL NOT NULL,
        PRIMARY KEY (upload_id, number)
    );
    """,
]


class SqliteStore(MetadataStore):
    def __init__(self, path: Path, db: aiosqlite.Connection, reader: sqlite3.Connection) -> None:
        super().__init__()
        self._path = path
        self._db = db
        self._reader = reader
        self._writing = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")  # the writer's only thread
        self._writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._writer.execute("PRAGMA synchronous = FULL")  # per connection: each commit is on disk before it returns

    @classmethod
    async def connect(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await _upgrade(db, path)
        except BaseException:
            await db.close()  # its thread would otherwise keep the process alive
            raise
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("PRAGMA query_only = ON")
        return cls(path, db, reader)

    @classmethod
    async def backup_to(cls, path: Path, dest: Path) -> int:
        """SQLite's online backup copies a consistent snapshot page by page while writers carry on."""
        if not path.exists():
            raise NoDatabase(f"no database at {path}; give --db PATH")
        partial = dest.with_name(dest.name + ".partial")

        def copy() -> None:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source:
                with contextlib.closing(sqlite3.connect(partial)) as target:
                    source.backup(target)
            os.replace(partial, dest)

        await asyncio.to_thread(copy)
        return dest.stat().st_size

    async def _disconnect(self) -> None:
        self._reader.close()
        self._writing.shutdown(wait=True)
        self._writer.close()
        await self._db.close()

    async def _lookup(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return self._reader.execute(sql, params).fetchall()

    async def _read(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]

    async def _claim_ids(self) -> int:
        (limit,) = (await self._write("UPDATE ids SET next = next + ? RETURNING next", (ID_BLOCK,)))[0]
        return int(limit) - ID_BLOCK

    async def _transaction(self, batch: list[Write]) -> list[Rows | Exception]:
        """One trip to the writer's thread. If the caller is cancelled meanwhile, the trip is still waited for, so the
        connection is never used by two transactions at once."""
        trip = asyncio.get_running_loop().run_in_executor(self._writing, self._run_transaction, batch)
        try:
            return await asyncio.shield(trip)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await trip
            raise

    def _run_transaction(self, batch: list[Write]) -> list[Rows | Exception]:
        """(In the writer's thread.)"""
        results: list[Rows | Exception] = []
        try:
            self._writer.execute("BEGIN IMMEDIATE")
            for write in batch:
                try:
                    results.append([tuple(row) for row in self._writer.execute(write.sql, write.params).fetchall()])
                except sqlite3.IntegrityError as err:  # this statement only; the others go on
                    results.append(err)
            self._writer.execute("COMMIT")
        except BaseException:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            raise
        return results

    # --- copying to another database (dfsd migrate) -------------------------------------------------------------------

    async def next_file_id(self) -> int:
        return int((await self._read("SELECT next FROM ids"))[0][0])

    async def set_next_file_id(self, next_id: int) -> None:
        await self._write("UPDATE ids SET next = ?", (next_id,))


async def _upgrade(db: aiosqlite.Connection, path: Path) -> None:
    """Create or upgrade the schema, each step in one transaction with the version it reaches."""
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    (recorded,) = next(iter(await db.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_version")))
    for step in schema_steps_to_run(recorded, SCHEMA_STEPS, path):
        await db.executescript(
            f"BEGIN IMMEDIATE; {SCHEMA_STEPS[step]}; DELETE FROM schema_version; "
            f"INSERT INTO schema_version (version) VALUES ({step + 1}); COMMIT;"
        )

"""The metadata store on PostgreSQL (``--db postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME``), through asyncpg.

A pool of connections serves the reads; a group commit takes one connection for its transaction, and a commit is
durable (with PostgreSQL's default ``synchronous_commit = on``) before the client hears ``stored``. One statement's
error aborts a whole PostgreSQL transaction, so a batch that fails that way is run again one write at a time: the error
then fails only its own caller, as on SQLite.

File ids come from the sequence ``file_ids``, which steps by ID_BLOCK: each ``nextval`` claims a whole block, and it
is claimed inside a committed transaction, so the claim is on disk before any id of it is used.

Names are compared in the "C" collation (UTF-8 byte order, as SQLite's BINARY), whatever the database's locale, so
listings page and prefix-match the same on both backends. The SQL stays within what PostgreSQL-compatible databases
commonly run (no extensions); only the schema's creation takes a PostgreSQL advisory lock, so that two processes
starting at once do not both create it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from .store import (
    ID_BLOCK,
    BackupUnsupported,
    DatabaseUnavailable,
    MetadataStore,
    PostgresURL,
    Rows,
    Write,
    schema_steps_to_run,
)

# Connections held open at most: reads run in parallel up to this many, plus the group commit's one.
POOL_SIZE = 10

# The advisory lock held while the schema is created or upgraded ('dfsd' in ASCII).
SCHEMA_LOCK = 0x64667364

# Step i takes a database from schema version i to i + 1.
SCHEMA_STEPS = [
    f"""
    CREATE TABLE files (
        id      BIGINT PRIMARY KEY,
        name    TEXT COLLATE "C" NOT NULL UNIQUE,
        node    BIGINT NOT NULL,
        size    BIGINT NOT NULL,
        sha256  BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        lost    DOUBLE PRECISION  -- when its node was found without its bytes; NULL while they are there
    );
    CREATE INDEX files_by_node ON files (node);
    CREATE INDEX files_lost ON files (node) WHERE lost IS NOT NULL;
    CREATE SEQUENCE file_ids INCREMENT BY {ID_BLOCK};  -- each value is the first id of a block of {ID_BLOCK}
    CREATE TABLE nodes (
        id        BIGINT PRIMARY KEY,
        host      TEXT NOT NULL,
        port      INTEGER NOT NULL,
        capacity  BIGINT NOT NULL,
        free      BIGINT NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        draining  INTEGER NOT NULL DEFAULT 0  -- being retired: its files move to other nodes, it gets no new ones
    );
    """,
    # Version 2: a file's metadata (``put.meta``), as JSON text; NULL when its put carried none.
    "ALTER TABLE files ADD COLUMN meta TEXT",
    # Version 3: buckets, whose objects are the files named ``BUCKET/KEY``.
    """
    CREATE TABLE buckets (
        name    TEXT COLLATE "C" PRIMARY KEY,
        owner   TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL
    );
    """,
]

# What asyncpg raises when the server cannot be reached, refuses us, or goes away.
_UNAVAILABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresStore(MetadataStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._pool = pool

    @classmethod
    async def connect(cls, location: PostgresURL) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(
                location.url, min_size=1, max_size=POOL_SIZE, server_settings={"application_name": "dfsd manager"}
            )
        except _UNAVAILABLE as err:
            raise DatabaseUnavailable(
                f"cannot open the PostgreSQL database {location}: {err}; check --db, that the server runs, "
                "that the database exists and that the user may log in"
            ) from err
        try:
            await _upgrade(pool, location)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @classmethod
    async def backup_to(cls, location: PostgresURL, dest: Path) -> int:
        raise BackupUnsupported(
            f"dfsd backup copies a SQLite database; {location} is PostgreSQL: back it up with PostgreSQL's own "
            f"tools, e.g. `pg_dump --format=custom --file={dest} DBNAME`, or continuous archiving"
        )

    async def _disconnect(self) -> None:
        await self._pool.close()

    async def _read(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return [tuple(row) for row in await self._pool.fetch(_numbered(sql), *params)]

    async def _claim_ids(self) -> int:
        (first,) = (await self._write("SELECT nextval('file_ids')"))[0]
        return int(first)

    async def _transaction(self, batch: list[Write]) -> list[Rows | Exception]:
        try:
            return list(await self._in_one_transaction(batch))
        except asyncpg.PostgresError:
            if len(batch) == 1:
                raise
        return [await self._alone(write) for write in batch]

    async def _alone(self, write: Write) -> Rows | Exception:
        try:
            return (await self._in_one_transaction([write]))[0]
        except asyncpg.PostgresError as err:
            return err

    async def _in_one_transaction(self, batch: list[Write]) -> list[Rows]:
        async with self._pool.acquire() as conn, conn.transaction():
            return [[tuple(row) for row in await conn.fetch(_numbered(w.sql), *w.params)] for w in batch]


async def _upgrade(pool: asyncpg.Pool, location: PostgresURL) -> None:
    """Create or upgrade the schema in one transaction, under a lock that a second manager starting now waits on."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        recorded = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        steps = schema_steps_to_run(recorded, SCHEMA_STEPS, location)
        for step in steps:
            await conn.execute(SCHEMA_STEPS[step])
        if steps:
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", len(SCHEMA_STEPS))


@functools.lru_cache(maxsize=128)
def _numbered(sql: str) -> str:
    """The store's portable ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (its SQL holds no other ``?``)."""
    counter = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)

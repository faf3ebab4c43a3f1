"""The metadata store on PostgreSQL (``--db postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME``), through asyncpg.

A pool of connections serves the reads; a group commit takes one for each of its transactions, and a commit is
durable (with PostgreSQL's default ``synchronous_commit = on``) before the client hears ``stored``. One statement's
error aborts a whole PostgreSQL transaction, so a transaction that fails that way is run again one write at a time: the
error then fails only its own caller, as on SQLite. The writes of one statement in a batch go in one round trip
(asyncpg's ``fetchmany``) when each names beforehand the key its row comes back with (``Write.key``: the commits of
uploads, the deletes); such writes each stand alone (one caller's one statement), so each statement's are a
transaction of their own, sent without BEGIN and COMMIT, and the batch's transactions go at once, each on a pooled
connection: a batch of commits and deletes costs one round trip's wait, not four (BEGIN, commits, deletes, COMMIT).
One group commit is out at a time: three at once, each going as soon as writes were queued, cut an upload's wait on
its hold and its commit a little on a 2-core machine loaded by other work (load 7-9), but under load 4 made 1 KiB
writes and deletes slower (batches of ~2 writes instead of ~4-8: more transactions, each costing the manager and the
server more CPU than the flush it shares).
An upload's hold also looks its name up, and its commit deletes the hold, each in one statement: an upload costs two
statements and no query of its own. The commit goes in a group commit; the holds go as lookups do (below), asked
while one statement is out joining the next, on a connection of their own whose transactions commit without waiting
for their flush to disk (``synchronous_commit = off``): an upload waits for one flush, its commit's, not two. That is
safe because nothing acknowledged rests on a hold alone. The commit of an upload requires its hold row (``_record``),
so a hold that a database crash lost makes that commit fail with error 1, never acknowledge, and leaves at worst an
orphan (removed as any failed commit's); the commit's own flush carries every WAL record before it, the hold's
included. A hold's name is taken for other uploads as soon as it commits, not when it is flushed: if a crash loses
it, the upload that was refused that name meanwhile was refused while it was taken, as if the holder had failed later.
The id blocks a hold uses were claimed in a durable commit (``_claim_ids``). Lookups by name, the reads of every get,
are grouped the same way (``lookups.py``): one query, on a connection of its own, for all the names asked while the
previous one was out; so is placement's count of the files on each node, which every put asks for while another
manager is up. Every round trip saved counts: on a busy machine, a query costs the manager and the server more than
the lookup it makes.

File ids come from the sequence ``file_ids``, which steps by ID_BLOCK: each ``nextval`` claims a whole block, and it
is claimed inside a committed transaction, so the claim is on disk before any id of it is used.

Several managers may share the database (``shared``): schema version 4 adds the table of uploads in flight (each
reservation is a row, so names are unique across managers and every manager's orphan checks see every upload; since
version 6 replacing uploads too, which claim no name) and the table of managers (each renews its row;
``coordination.py``). The coordinator is whoever holds COORDINATOR_LOCK, a session advisory lock on a connection of
its own, which the server frees when that connection ends. A move is
switched to its target (``relocate``) on that very connection: a manager that has lost the lock, which only happens by
losing that connection, can no longer commit a move that the new coordinator, blind to it, would take for an orphan.
The managers' leases are renewed, and reservations tidied, outside the group commit, so that a commit stuck behind a
row lock does not make a live manager's lease run out.

Since version 7 the table ``sole_lease`` holds one row, the sole lease (``sole_lease.py``): the manager alone on the
database holds it and answers lookups by name from memory (``name_cache.py``; ``find``), filled by the lookups and by
its own commits. Every write to ``files`` goes through ``_writing_files``: it waits for the lease's right to write (a
manager that started beside a holder waits out the holder's turn) and tells the names in memory what it changed. Since
version 8 each statement that writes to ``files`` is fenced where it runs (``FENCE_SQL`` in the place of ``FENCED``,
``_send_fenced``): its transaction locks the lease row FOR SHARE until it ends, and fails, doing nothing, unless the row
is still at the generation it was sent under and held by nobody or this manager; so a write that reaches the database
late, after another manager took the lease, is refused by the database itself, whatever becomes of its sender. Refused,
it is sent again once a renewal has brought the change in. The fence is a condition of the statement, not a statement of
its own: a group commit's transaction of keyed writes stays one round trip, and its statements share one lock (the first
takes it, the others find it held); a move's switch is fenced on the coordinator's connection. The renewals run every
TICK on a connection of their own, in one transaction that also renews the manager's ``last_seen``, so that a manager is
*up* for the others from its first renewal on, and a holder never takes a newcomer for absent; their FOR UPDATE of the
lease row waits for the fenced transactions under way (a commit's flush).

When the server cannot be reached, or goes away mid-request, every call fails at once with ``ServersUnavailable``
(error 1, naming the database) instead of an asyncpg error; a statement, or the wait for a pooled connection, gives up
after DB_TIMEOUT. The pool opens fresh connections as they are needed, so service resumes by itself.

Names are compared in the "C" collation (UTF-8 byte order, as SQLite's BINARY), whatever the database's locale, so
listings page and prefix-match the same on both backends. The SQL stays within what PostgreSQL-compatible databases
commonly run (no extensions); only the schema's creation takes a PostgreSQL advisory lock, so that two processes
starting at once do not both create it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TypeVar

import asyncpg
import structlog

from ..protocol import ServersUnavailable
from .lookups import GroupLookup
from .name_cache import NameCache
from .sole_lease import LeaseRow, SoleLease
from .store import (
    _FILE_COLUMNS,
    FENCED,
    HELD,
    ID_BLOCK,
    RELOCATE_SQL,
    BackupUnsupported,
    DatabaseUnavailable,
    FileRecord,
    ManagerRecord,
    MetadataStore,
    PostgresURL,
    Progress,
    Rows,
    Write,
    Written,
    file_record,
    schema_steps_to_run,
)

T = TypeVar("T")

log = structlog.get_logger("dfsd.manager")

# Connections held open at most: reads run in parallel up to this many, and so do the transactions of a group commit.
POOL_SIZE = 10

# The files of many names in one query: the group lookup's (``lookups.py``).
FIND_ANY_SQL = f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ANY(?::text[])"

# What ``files_per_node`` asks its group lookup for: the one answer, every node's count.
ALL_NODES = "every node"

# An upload's hold (name, or None for a replacing upload; file id; node): what ``_hold`` asks its group lookup for.
Hold = tuple[str | None, int, int]

# The advisory lock held while the schema is created or upgraded ('dfsd' in ASCII).
SCHEMA_LOCK = 0x64667364

# The check that fails a write to files sent under a generation of the sole lease that is no longer the database's
# (``FENCE_SQL``): the constraint's name, as the error names it.
LEASE_CHANGED = "sole_lease_changed"

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
    # Version 4: several managers sharing the database.
    """
    CREATE TABLE uploads (  -- uploads in flight, through any manager: their names are taken, their bytes no orphans
        name     TEXT COLLATE "C" PRIMARY KEY,
        file_id  BIGINT NOT NULL,
        node     BIGINT NOT NULL,
        manager  TEXT NOT NULL,
        started  DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE managers (  -- every manager sharing this database, renewing its lease
        id          TEXT PRIMARY KEY,
        address     TEXT NOT NULL,
        started     DOUBLE PRECISION NOT NULL,
        last_seen   DOUBLE PRECISION NOT NULL,  -- by the database's clock, so managers' clocks need not agree
        coordinator BOOLEAN NOT NULL DEFAULT FALSE,
        rebalance_asked BOOLEAN NOT NULL DEFAULT FALSE,  -- another manager asked the coordinator for a rebalance
        rebalancing BOOLEAN NOT NULL DEFAULT FALSE,  -- the coordinator's rebalancer, as status shows it everywhere
        moved     BIGINT NOT NULL DEFAULT 0,
        failed    BIGINT NOT NULL DEFAULT 0,
        remaining BIGINT NOT NULL DEFAULT 0
    );
    """,
    # Version 5: multipart uploads in progress and their parts (whose bytes are the files named in ``name``).
    """
    CREATE TABLE multipart_uploads (
        upload_id  TEXT PRIMARY KEY,
        name       TEXT COLLATE "C" NOT NULL,  -- the file the completed upload becomes
        owner      TEXT NOT NULL,
        initiated  DOUBLE PRECISION NOT NULL,
        meta       TEXT,  -- JSON, as files.meta
        completing DOUBLE PRECISION  -- when a completion claimed it; NULL while parts may come
    );
    CREATE INDEX multipart_uploads_by_name ON multipart_uploads (name, upload_id);
    CREATE INDEX multipart_uploads_by_age ON multipart_uploads (initiated);
    CREATE TABLE multipart_parts (
        upload_id TEXT NOT NULL,
        number    INTEGER NOT NULL,
        name      TEXT COLLATE "C" NOT NULL,  -- the stored file holding its bytes
        file_id   BIGINT NOT NULL,
        size      BIGINT NOT NULL,
        md5       BYTEA NOT NULL,
        created   DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (upload_id, number)
    );
    """,
    # Version 6: a replacing upload is recorded in flight too, so no manager takes its bytes for an orphan; it claims
    # no name (NULL), so an upload is known by its file id, and only the names claimed are unique.
    """
    ALTER TABLE uploads DROP CONSTRAINT uploads_pkey;
    ALTER TABLE uploads ALTER COLUMN name DROP NOT NULL;
    ALTER TABLE uploads ADD PRIMARY KEY (file_id);
    CREATE UNIQUE INDEX uploads_by_name ON uploads (name);
    """,
    # Version 7: the sole lease (``sole_lease.py``), one row: the manager alone on the database keeps names in memory.
    """
    CREATE TABLE sole_lease (
        generation BIGINT NOT NULL,
        holder     TEXT,  -- the manager that may answer names from memory under this generation; NULL: none
        ended      TEXT   -- the holder whose turn this generation ended, until that has certainly run out
    );
    INSERT INTO sole_lease (generation, holder, ended) VALUES (0, NULL, NULL);
    """,
    # Version 8: the fence of the writes to files (``FENCE_SQL``): a value of this type that is not true fails its
    # statement, and the transaction with it.
    f"CREATE DOMAIN sole_lease_fence AS BOOLEAN CONSTRAINT {LEASE_CHANGED} CHECK (VALUE)",
]

# The sole lease's fence, put in the place of ``FENCED`` in a statement that writes to files (``_send_fenced``): the
# lease row, locked FOR SHARE until the transaction ends, must be at the generation the write was sent under and held by
# nobody or this manager, else the statement fails with LEASE_CHANGED and its transaction does nothing. Any change to
# the row (a renewal's FOR UPDATE, an UPDATE) waits for the transactions holding the lock, and a fence waits for a
# change under way and then checks the row it made (FOR SHARE, not FOR KEY SHARE: the table has no key, so every UPDATE
# of it is one that a key-share lock lets through). PostgreSQL evaluates this uncorrelated subquery once per statement,
# before the rows it writes (a one-time filter); a transaction's later fences find the lock held. Its two values are
# written into the text (an integer, and the manager's id: hexadecimal digits): a generation changes rarely, and each
# text is prepared once per connection.
# (The holder is checked too, though the generation implies it: within one generation the holder only ever goes to
# none, and a manager has rights under a generation only if that holder was none or itself.)
FENCE_SQL = (
    "(SELECT CAST(generation = {generation} AND (holder IS NULL OR holder = '{manager}') AS sole_lease_fence) "
    "FROM sole_lease FOR SHARE)"
)

# The database's clock, in seconds since the Unix epoch: the one clock every manager's lease is measured by.
_NOW = "CAST(extract(epoch from clock_timestamp()) AS DOUBLE PRECISION)"

# The hold of an upload, and its lookup of the name, in one statement: its file id if it claimed the name.
HOLD_SQL = (
    f"INSERT INTO uploads (name, file_id, node, manager, started) SELECT $1, $2, $3, $4, {_NOW} "
    "WHERE NOT EXISTS (SELECT 1 FROM files WHERE name = $1) ON CONFLICT (name) DO NOTHING RETURNING file_id"
)

# What asyncpg raises when the server cannot be reached, refuses us, or goes away.
_UNAVAILABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

# What asyncpg raises, once connected, when the server has gone away, is restarting, or does not answer: the request
# fails with error 1, and the pool opens fresh connections once the server is back.
_LOST = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)

# Seconds a statement, or the wait for a pooled connection, may take before the request fails with error 1 instead
# of hanging on a database that does not answer.
DB_TIMEOUT = 10.0

# The advisory lock the coordinator holds on a connection of its own ('dfsc' in ASCII).
COORDINATOR_LOCK = 0x64667363

# Every connection's: the server notices a manager cut off (and frees its locks, the coordinator's among them) within
# about idle + interval * count seconds; the coordinator notices within LOCK_CHECK_TIMEOUT of its next check.
_KEEPALIVE = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "2"}
LOCK_CHECK_TIMEOUT = 2.0

# Every other connection's session. The server ends a transaction its manager left idle longer than DB_TIMEOUT (the
# manager frozen between two statements: SIGSTOP, a stalled host) and a connection whose peer stopped answering
# keepalives: the row locks such a transaction holds on ``sole_lease`` (a renewal's FOR UPDATE, a write's fence FOR
# SHARE) would otherwise stop every other manager's renewals, and so its writes, for as long as it stays frozen.
_SESSION = {
    "application_name": "dfsd manager",
    "idle_in_transaction_session_timeout": f"{DB_TIMEOUT * 1000:.0f}",
    **_KEEPALIVE,
}
# The holds' connection and the sole lease's: their transactions commit without waiting for their flush (see above,
# and ``keep_sole_lease``).
_UNFLUSHED_SESSION = {**_SESSION, "synchronous_commit": "off"}


def _lease_changed(err: BaseException) -> bool:
    """Whether ``err`` is a statement's refusal by its fence (``FENCE_SQL``): the sole lease changed."""
    return isinstance(err, asyncpg.CheckViolationError) and err.constraint_name == LEASE_CHANGED


def _not_renewed() -> ServersUnavailable:
    return ServersUnavailable(
        "servers unavailable: this manager could not renew its lease on the metadata database within "
        f"{DB_TIMEOUT:g} s (unreachable or too slow); nothing was changed by this request: try again"
    )


def _unreachable(err: BaseException) -> ServersUnavailable:
    return ServersUnavailable(
        f"servers unavailable: the metadata database is unreachable ({type(err).__name__}: {err}); a change this "
        "request asked for may or may not have been made if the database went away while making it (look with stat "
        "or ls first); the manager reconnects by itself: try again shortly"
    )


class PostgresStore(MetadataStore):
    shared = True
    name_cache: NameCache

    def __init__(self, pool: asyncpg.Pool, location: PostgresURL) -> None:
        super().__init__()
        self._pool = pool
        self._location = location
        self._stale_holds: set[int] = set()  # file ids of uploads over whose rows in uploads may not have been deleted
        self._released: set[int] = set()  # file ids of uploads under way whose commit deleted their rows in uploads
        self._lock_conn: asyncpg.Connection | None = None  # holds COORDINATOR_LOCK while this manager coordinates
        self._lookups = GroupLookup(self._find_all)
        self._counts = GroupLookup(self._count_files)  # one name, ALL_NODES: the puts asking meanwhile share a query
        self._holds = GroupLookup(self._hold_all)
        self._lookup_conn = _Dedicated(location, _SESSION)  # the group lookup's
        self._holds_conn = _Dedicated(location, _UNFLUSHED_SESSION)
        self._lock_conn_busy = asyncio.Lock()  # one statement at a time on it: the lock's check, or a move's switch
        self._lock_lost = False  # lost outside a try: the next try reports the turn ended, even if it takes it again
        self.sole = SoleLease(self.manager_id)
        self.name_cache = NameCache()  # used only while ``sole`` allows
        self._fenced = False  # writes to files wait for the sole lease's rights (``fence_files``)
        self._lease_conn = _Dedicated(location, _UNFLUSHED_SESSION, LOCK_CHECK_TIMEOUT)  # the sole lease's renewals
        self._renewed = asyncio.Event()  # set (and replaced) as each renewal ends, well or not
        self._renewal_sent = -math.inf  # when the last renewal to end began
        self._renewal_error: ServersUnavailable | None = None  # why the last renewal failed; None if it did not

    @classmethod
    async def connect(cls, location: PostgresURL) -> PostgresStore:
        pool = asyncpg.create_pool(
            location.url,
            min_size=0,  # no floor to restore: asyncpg would log a traceback each time the database is away
            max_size=POOL_SIZE,
            command_timeout=DB_TIMEOUT,
            timeout=DB_TIMEOUT,
            server_settings=_SESSION,
            reset=_keep_session,
        )
        try:
            await pool  # with no floor, this connects nobody: the upgrade's connection is the first
            await _upgrade(pool, location)
        except _UNAVAILABLE as err:
            await pool.close()
            raise DatabaseUnavailable(
                f"cannot open the PostgreSQL database {location}: {err}; check --db, that the server runs, "
                "that the database exists and that the user may log in"
            ) from err
        except BaseException:
            await pool.close()
            raise
        return cls(pool, location)

    @classmethod
    async def backup_to(cls, location: PostgresURL, dest: Path) -> int:
        raise BackupUnsupported(
            f"dfsd backup copies a SQLite database; {location} is PostgreSQL: back it up with PostgreSQL's own "
            f"tools, e.g. `pg_dump --format=custom --file={dest} DBNAME`, or continuous archiving"
        )

    async def _disconnect(self) -> None:
        await self._give_back_sole_lease()
        self._lease_conn.close()
        await self._lookups.close()
        await self._counts.close()
        await self._holds.close()
        self._lookup_conn.close()
        self._holds_conn.close()
        await self._drop_lock()
        await self._pool.close()

    async def _read(self, sql: str, params: Sequence[object] = ()) -> Rows:
        try:
            async with self._pool.acquire(timeout=DB_TIMEOUT) as conn:
                return [tuple(row) for row in await conn.fetch(_numbered(sql), *params)]
        except _LOST as err:
            raise _unreachable(err) from err

    async def find(self, name: str, *, fresh: bool = False) -> FileRecord | None:
        since = None
        if not fresh and self.sole.may_cache(lease_clock()):
            record = self.name_cache.get(name)
            if record is not None:
                self.name_cache.hits += 1
                return record
            since = self.name_cache.epoch
        self.name_cache.misses += 1
        record = await self._lookups.find(name)
        if record is not None and since is not None:
            self.name_cache.add(record, since)
        return record

    async def _find_all(self, names: list[str]) -> dict[str, FileRecord]:
        # On a connection of its own, outside the pool: the group lookup sends one query at a time, and a pooled
        # connection's acquire and release cost the manager more than the query itself.
        rows = await self._lookup_conn.run(lambda conn: conn.fetch(_numbered(FIND_ANY_SQL), names))
        return {record.name: record for record in map(file_record, rows)}

    async def _claim_ids(self) -> int:
        (first,) = (await self._write("SELECT nextval('file_ids')"))[0]
        return int(first)

    async def _transaction(self, batch: list[Write]) -> list[Rows | Exception]:
        # Keyed writes are single statements of callers that did not wait for each other: each statement's go
        # together, in a transaction of their own (one round trip), beside the other writes' one transaction; all of
        # them at once, each on a connection of its own, so that the batch takes one round trip, not one after another.
        groups: list[list[Write]] = [run for run in _runs(batch) if run[0].key is not None]
        if rest := [write for write in batch if write.key is None]:
            groups.append(rest)
        outcomes = await asyncio.gather(*map(self._in_one_transaction, groups), return_exceptions=True)
        results: dict[int, Rows | Exception] = {}
        for group, outcome in zip(groups, outcomes, strict=True):
            each: list[Rows | Exception]
            if isinstance(outcome, _LOST):
                each = [_unreachable(outcome)] * len(group)
            elif isinstance(outcome, ServersUnavailable):  # its fence kept refusing it (``_send_fenced``): nothing done
                each = [outcome] * len(group)
            elif isinstance(outcome, asyncpg.PostgresError):  # the group again write by write: it fails only its own
                each = [await self._alone(write) for write in group] if len(group) > 1 else [outcome]
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                each = list(outcome)
            results.update(zip(map(id, group), each, strict=True))
        return [results[id(write)] for write in batch]

    async def _alone(self, write: Write) -> Rows | Exception:
        try:
            return (await self._in_one_transaction([write]))[0]
        except _LOST as err:
            return _unreachable(err)
        except (asyncpg.PostgresError, ServersUnavailable) as err:
            return err

    async def _write_alone(self, sql: str, params: Sequence[object] = ()) -> Rows:
        """One write statement committed on its own, at once, beside the group commit rather than in it."""
        try:
            async with self._pool.acquire(timeout=DB_TIMEOUT) as conn:
                return [tuple(row) for row in await conn.fetch(_numbered(sql), *params)]
        except _LOST as err:
            raise _unreachable(err) from err

    async def _in_one_transaction(self, batch: list[Write]) -> list[Rows]:
        if any(FENCED in write.sql for write in batch):
            return await self._send_fenced(lambda fence: self._sent_in_one_transaction(batch, fence))
        return await self._sent_in_one_transaction(batch, FENCED)

    async def _sent_in_one_transaction(self, batch: list[Write], fence: str) -> list[Rows]:
        """Send ``batch`` in one transaction, with ``fence`` in the place of ``FENCED``."""
        runs = _runs(batch)
        results: dict[int, Rows] = {}
        async with self._pool.acquire(timeout=DB_TIMEOUT) as conn:
            if len(runs) == 1:  # one round trip is a transaction of its own: no BEGIN and COMMIT round trips
                await _send(conn, runs[0], results, fence)
            else:
                async with conn.transaction():
                    for run in runs:
                        await _send(conn, run, results, fence)
        return [results[id(write)] for write in batch]

    # --- uploads in flight, shared by every manager -------------------------------------------------------------------

    async def _hold(self, name: str | None, file_id: int, node: int) -> bool:
        # One statement for the hold and the lookup of the name (a NULL name finds no file), sent with the holds
        # asked meanwhile, committed without waiting for its flush (see the module's docstring).
        try:
            outcome = await self._holds.find((name, file_id, node))
        except BaseException:
            self._stale_holds.add(file_id)  # the row may have been written: tidy_reservations makes sure it goes
            raise
        if isinstance(outcome, Exception):
            raise outcome
        return bool(outcome)

    async def _hold_all(self, holds: list[Hold]) -> dict[Hold, bool | Exception]:
        """Write ``holds`` in one round trip, one transaction (their file ids differ): True for those that claimed
        their name. A statement's error aborts them all, so they are then tried one by one: it fails only its own."""
        params = [(name, file_id, node, self.manager_id) for name, file_id, node in holds]
        try:
            rows = await self._holds_conn.run(lambda conn: conn.fetchmany(HOLD_SQL, params))
        except asyncpg.PostgresError as err:
            if len(holds) == 1:
                return {holds[0]: err}
            return {hold: await self._hold_alone(one) for hold, one in zip(holds, params, strict=True)}
        held = {row[0] for row in rows}
        return {hold: hold[1] in held for hold in holds}

    async def _hold_alone(self, params: tuple[object, ...]) -> bool | Exception:
        try:
            return bool(await self._holds_conn.run(lambda conn: conn.fetch(HOLD_SQL, *params)))
        except asyncpg.PostgresError as err:
            return err

    async def _record(self, file_id: int, sql: str, params: Sequence[object]) -> Rows:
        # The row is written only while the upload's hold is there, locked for this statement: another manager that
        # finds this one's lease lapsed (it was frozen or cut off) drops its holds (``tidy_reservations``), and the
        # coordinator may then remove the bytes as an orphan, so a commit after that would acknowledge a file with no
        # bytes. The hold goes only with the row written: a commit that lost a race (and is tried again) keeps its
        # hold, so its bytes are never an orphan meanwhile; it reads a row marked not recorded.
        rows = await self._write(
            "WITH held AS (SELECT file_id FROM uploads WHERE file_id = ? AND manager = ? FOR UPDATE), "
            f"recorded AS ({sql.replace(HELD, 'EXISTS (SELECT 1 FROM held)')}), "
            "released AS (DELETE FROM uploads WHERE file_id IN (SELECT id FROM recorded) AND manager = ?) "
            "SELECT id, TRUE FROM recorded "
            "UNION ALL SELECT file_id, FALSE FROM held WHERE NOT EXISTS (SELECT 1 FROM recorded)",
            (file_id, self.manager_id, *params, self.manager_id),
            key=file_id,
        )
        if not rows:
            raise ServersUnavailable(
                f"servers unavailable: upload {file_id} lost its reservation (the database restarted and lost it, or "
                "this manager was out of touch with the database for longer than its lease and another manager "
                "released it); nothing was stored, try again"
            )
        recorded = [row[:1] for row in rows if row[1]]
        if recorded:
            self._released.add(file_id)
        return recorded

    async def _unhold(self, file_id: int) -> None:
        if file_id in self._released:  # its commit deleted the hold
            self._released.discard(file_id)
            return
        try:
            await self._write("DELETE FROM uploads WHERE file_id = ? AND manager = ?", (file_id, self.manager_id))
        except ServersUnavailable:
            self._stale_holds.add(file_id)  # the row stays; tidy_reservations drops it later

    async def _held_elsewhere(self) -> set[int]:
        return {file_id for (file_id,) in await self._read("SELECT file_id FROM uploads")}

    async def tidy_reservations(self, manager_lease: float) -> None:
        # By file id, never "all but those in flight": an upload reserving meanwhile is safe from this statement.
        if stale := sorted(self._stale_holds):
            await self._write_alone(
                "DELETE FROM uploads WHERE manager = ? AND file_id = ANY(?::bigint[])", (self.manager_id, stale)
            )
            self._stale_holds.difference_update(stale)
        await self._write_alone(
            f"DELETE FROM uploads WHERE manager <> ? AND manager NOT IN "
            f"(SELECT id FROM managers WHERE last_seen > {_NOW} - ?)",
            (self.manager_id, manager_lease),
        )

    async def files_per_node(self) -> dict[int, int] | None:
        # Every put through this manager asks while another manager is up, and the query counts every row: the puts
        # that ask while one is out share the next, which, sent after they asked, counts what a query of their own
        # would have (the placement test's bounds hold as they did).
        return await self._counts.find(ALL_NODES)

    async def _count_files(self, _: list[str]) -> dict[str, dict[int, int]]:
        rows = await self._read(
            "SELECT node, sum(n) FROM (SELECT node, count(*) AS n FROM files GROUP BY node UNION ALL "
            "SELECT node, count(*) AS n FROM uploads WHERE manager <> ? GROUP BY node) AS counts GROUP BY node",
            (self.manager_id,),
        )
        return {ALL_NODES: {node: int(count) for node, count in rows}}

    # --- managers and their coordinator -------------------------------------------------------------------------------

    async def try_coordinate(self) -> bool:
        async with self._lock_conn_busy:
            return await self._take_or_keep_lock()

    async def _take_or_keep_lock(self) -> bool:
        if self._lock_lost:
            self._lock_lost = False
            return False
        try:
            if self._lock_conn is None:
                self._lock_conn = await asyncpg.connect(
                    self._location.url,
                    timeout=LOCK_CHECK_TIMEOUT,
                    server_settings={"application_name": "dfsd coordinator", **_KEEPALIVE},
                )
                if not await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", COORDINATOR_LOCK):
                    await self._drop_lock()
                    return False
                return True
            await self._lock_conn.fetchval("SELECT 1", timeout=LOCK_CHECK_TIMEOUT)  # still connected: still held
            return True
        except (*_LOST, asyncpg.PostgresError):
            await self._drop_lock()
            return False

    async def holds_lock(self) -> bool:
        async with self._lock_conn_busy:
            if self._lock_conn is None:
                return False
            try:
                await self._lock_conn.fetchval("SELECT 1", timeout=LOCK_CHECK_TIMEOUT)
                return True
            except (*_LOST, asyncpg.PostgresError):
                await self._lose_lock()
                return False

    async def relocate(self, file_id: int, source: int, target: int) -> bool:
        """Fenced: the switch runs on the connection holding the coordinator lock, so it commits only while this
        manager holds it; False (as for a row changed meanwhile) if it does not. ``ServersUnavailable`` if that
        connection failed during the switch: then it may or may not have been committed, and the caller leaves both
        copies for the next coordinator's reconciliation to sort out."""
        async with self._writing_files(ids=(file_id,)):
            return await self._send_fenced(lambda fence: self._relocate(file_id, source, target, fence))

    async def _relocate(self, file_id: int, source: int, target: int, fence: str) -> bool:
        async with self._lock_conn_busy:
            conn = self._lock_conn
            if conn is None:
                return False
            sql = _numbered(RELOCATE_SQL.replace(FENCED, fence))
            try:
                rows = await conn.fetch(sql, target, file_id, source, timeout=DB_TIMEOUT)
            except (*_LOST, asyncpg.PostgresError) as err:
                if _lease_changed(err):  # refused by its fence: the lock and its connection are fine
                    raise
                await self._lose_lock()
                raise _unreachable(err) from err
        return len(rows) == 1

    async def _lose_lock(self) -> None:
        """The lock's connection failed outside ``try_coordinate``: the next try tells the manager its turn ended."""
        await self._drop_lock()
        self._lock_lost = True

    async def _drop_lock(self) -> None:
        """Let go of the coordinator lock (closing its connection frees it on the server)."""
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            conn.terminate()

    async def renew_manager(self, manager: ManagerRecord, coordinating: bool, progress: Progress) -> bool:
        await self._write_alone(
            "INSERT INTO managers "
            "(id, address, started, last_seen, coordinator, rebalancing, moved, failed, remaining) "
            f"VALUES (?, ?, ?, {_NOW}, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET last_seen = {_NOW}, "
            "coordinator = excluded.coordinator, rebalancing = excluded.rebalancing, moved = excluded.moved, "
            "failed = excluded.failed, remaining = excluded.remaining",
            (manager.id, manager.address, manager.started, coordinating, *astuple(progress)),
        )
        if not coordinating:
            return False
        # A coordinator that died did not clear its own flag; a rebalance asked of it is this one's to run.
        await self._write_alone("UPDATE managers SET coordinator = FALSE WHERE id <> ? AND coordinator", (manager.id,))
        asked = await self._write_alone(
            "UPDATE managers SET rebalance_asked = FALSE WHERE rebalance_asked RETURNING id"
        )
        return bool(asked)

    async def ask_rebalance(self) -> None:
        await self._write_alone("UPDATE managers SET rebalance_asked = TRUE WHERE coordinator")

    async def managers(self, lease: float) -> list[ManagerRecord] | None:
        rows = await self._read(
            f"SELECT id, address, started, last_seen > {_NOW} - ?, coordinator, rebalancing, moved, failed, remaining "
            "FROM managers ORDER BY address, id",
            (lease,),
        )
        return [
            ManagerRecord(id_, address, started, up, up and coordinator, Progress(*progress))
            for id_, address, started, up, coordinator, *progress in rows
        ]

    # --- the sole lease (``sole_lease.py``) and the names kept in memory (``name_cache.py``) -----------------------

    def fence_files(self) -> None:
        self._fenced = True

    async def keep_sole_lease(self, manager: ManagerRecord, lease: float) -> None:
        sent = lease_clock()
        try:
            await self._lease_conn.run(lambda conn: self._renew_sole_lease(conn, manager, lease, sent))
            self.sole.committed(lease_clock())
            self._renewal_error = None
        except (ServersUnavailable, asyncpg.PostgresError) as err:
            self.sole.failed()
            self._renewal_error = err if isinstance(err, ServersUnavailable) else _unreachable(err)
        finally:
            self._renewal_sent = sent
            self._renewed.set()
            self._renewed = asyncio.Event()

    async def _renew_sole_lease(
        self, conn: asyncpg.Connection, manager: ManagerRecord, lease: float, sent: float
    ) -> None:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO managers (id, address, started, last_seen) VALUES ($1, $2, $3, {_NOW}) "
                f"ON CONFLICT (id) DO UPDATE SET last_seen = {_NOW}",
                manager.id,
                manager.address,
                manager.started,
            )
            row = await conn.fetchrow("SELECT generation, holder, ended FROM sole_lease FOR UPDATE")
            others = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM managers WHERE id <> $1 AND last_seen > {_NOW} - $2)",
                manager.id,
                lease,
            )
            write, void = self.sole.step(LeaseRow(*row), not others, sent)
            if void:
                self.name_cache.clear()
            if write is not None:
                # A renewal that only renews commits without waiting for its flush (the connection's session: a
                # ``last_seen`` a crash loses is renewed again); one that changes the lease is flushed before it
                # counts, since a manager acting on a change that a crash then lost could write beside a holder.
                await conn.execute("SET LOCAL synchronous_commit TO on")
                await conn.execute(
                    "UPDATE sole_lease SET generation = $1, holder = $2, ended = $3",
                    write.generation,
                    write.holder,
                    write.ended,
                )

    async def _give_back_sole_lease(self) -> None:
        """Shutting down: a holder stops answering from memory, then gives the lease back, so that the next manager
        to start need not wait (best effort: one that cannot is simply waited out)."""
        row = self.sole.released()
        self.name_cache.clear()
        if row is None:
            return
        try:
            await self._lease_conn.run(
                lambda conn: conn.execute(
                    "UPDATE sole_lease SET holder = NULL, ended = NULL WHERE generation = $1 AND holder = $2",
                    row.generation,
                    self.manager_id,
                )
            )
        except (ServersUnavailable, asyncpg.PostgresError):
            return

    def _writing_files(self, names: Sequence[str] = (), ids: Sequence[int] = (), every: bool = False) -> _LeasedWrite:
        return _LeasedWrite(self, names, ids, every)

    async def _writable(self) -> int | None:
        """Wait until this manager may write to ``files``: the generation it writes under (None where writes are not
        fenced: a tool's store). ``ServersUnavailable`` at once if its rights ran out because the database cannot be
        reached, or after DB_TIMEOUT."""
        if not self._fenced:
            return None
        deadline = lease_clock() + DB_TIMEOUT
        while not self.sole.may_write(now := lease_clock()):
            start = self.sole.writes_from()
            fenced = now < start < math.inf  # waiting out another holder's turn
            if self._renewal_error is not None and not fenced:
                raise ServersUnavailable(self._renewal_error.message)
            if now >= deadline:
                raise _not_renewed()
            if fenced:
                await asyncio.sleep(min(start, deadline) - now)
            else:
                await self._next_renewal(deadline)
        return self.sole.generation

    async def _next_renewal(self, deadline: float) -> None:
        """Until the renewal under way (or the next) ends, or ``deadline``."""
        ended = self._renewed
        try:
            async with asyncio.timeout(max(0.0, deadline - lease_clock())):
                await ended.wait()
        except TimeoutError:
            return

    async def _send_fenced(self, send: Callable[[str], Awaitable[T]]) -> T:
        """``send(fence)``: a transaction whose writes to files hold ``fence`` in the place of ``FENCED``, the fence of
        the generation this manager may write under now (once it may: ``_writable``). Refused by its fence, it did
        nothing: the lease changed since this manager's last renewal, so it is sent again once a renewal begun after
        the refusal has brought the change in; ``ServersUnavailable`` (nothing was changed) if that takes longer than
        DB_TIMEOUT. A manager whose turn a newcomer ended carries on this way within a TICK, its changes unharmed;
        one that finds another manager holding the lease ends that turn at that renewal, and waits it out
        (``_writable``) before it sends again."""
        deadline = lease_clock() + DB_TIMEOUT
        while True:
            generation = await self._writable()
            fence = FENCED if generation is None else FENCE_SQL.format(generation=generation, manager=self.manager_id)
            try:
                return await send(fence)
            except asyncpg.CheckViolationError as err:
                if not _lease_changed(err):
                    raise
            log.info("fenced_write_refused", generation=generation, why="the sole lease changed: sent again")
            refused = lease_clock()
            while self._renewal_sent < refused and lease_clock() < deadline:
                await self._next_renewal(deadline)
            if lease_clock() >= deadline:
                raise _not_renewed()

    # --- copying to another database (dfsd migrate) -------------------------------------------------------------------

    async def next_file_id(self) -> int:
        (last, called), *_ = await self._read("SELECT last_value, is_called FROM file_ids")
        return int(last) + ID_BLOCK if called else int(last)

    async def set_next_file_id(self, next_id: int) -> None:
        await self._write("SELECT setval('file_ids', ?, false)", (next_id,))  # the next nextval gives next_id


class _LeasedWrite(Written):
    """A write to ``files`` through a PostgreSQL store: it waits for the right to write before it queues its
    statements (fenced as they are sent: ``PostgresStore._send_fenced``), and tells the names kept in memory what it
    changed (always: also when it failed, since it may have been done)."""

    def __init__(self, store: PostgresStore, names: Sequence[str], ids: Sequence[int], every: bool) -> None:
        self._store = store
        self._names = names
        self._ids = ids
        self._every = every
        self._since: int | None = None  # the names' epoch when it began, if they are in use

    async def __aenter__(self) -> _LeasedWrite:
        store = self._store
        await store._writable()
        self._since = store.name_cache.epoch if store.sole.may_cache(lease_clock()) else None
        return self

    async def __aexit__(self, *exc: object) -> None:
        names = self._store.name_cache
        if self._every:
            names.clear()
        elif self._names or self._ids:
            names.forget(self._names, self._ids)

    def wrote(self, record: FileRecord) -> None:
        if self._since is not None:
            self._store.name_cache.add(record, self._since)


def lease_clock() -> float:
    """The clock the sole lease is measured by: seconds that go on while the host is suspended (CLOCK_BOOTTIME), so
    a manager whose host slept finds its rights run out, as they have for the other managers."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class _Dedicated:
    """A connection of its own, outside the pool, for a group lookup (which sends one statement at a time): opened
    when first used, with the session settings ``session``, and again after it failed."""

    def __init__(self, location: PostgresURL, session: dict[str, str], timeout: float = DB_TIMEOUT) -> None:
        self._location = location
        self._session = session
        self._timeout = timeout  # for connecting and for each statement
        self._conn: asyncpg.Connection | None = None

    async def run(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``use(connection)``; ``ServersUnavailable`` if the server cannot be reached or went away. A connection
        already known to be closed (the server restarted while it was idle) is replaced before use, as the pool
        replaces its own: nothing was sent on it, so nothing fails for it."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self._location.url,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    server_settings=self._session,
                )
            return await use(self._conn)
        except _LOST as err:
            self.close()
            raise _unreachable(err) from err

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


def _runs(batch: list[Write]) -> list[list[Write]]:
    """The round trips that send ``batch``: the keyed writes of each statement together, in one (at the place of the
    first of them), and every other write alone, in order. Writes in one batch come from callers that did not wait
    for each other, so their order is theirs to choose; only a write's key tells its rows from the others' in the
    answer of a round trip, so two writes of one statement and one key never share one."""
    runs: list[list[Write]] = []
    together: dict[str, tuple[list[Write], set[object]]] = {}
    for write in batch:
        run, keys = together.get(write.sql, ([], set()))
        if write.key is None or write.key in keys:
            runs.append([write])
            continue
        if not run:
            runs.append(run)
            together[write.sql] = (run, keys)
        run.append(write)
        keys.add(write.key)
    return runs


async def _send(conn: asyncpg.Connection, run: list[Write], results: dict[int, Rows], fence: str) -> None:
    """Run the writes of ``run`` (one statement's, with distinct keys, if more than one) in one round trip, with
    ``fence`` in the place of ``FENCED``."""
    sql = _numbered(run[0].sql.replace(FENCED, fence))
    if len(run) == 1:
        results[id(run[0])] = [tuple(row) for row in await conn.fetch(sql, *run[0].params)]
        return
    by_key: dict[object, Rows] = {write.key: [] for write in run}
    for row in await conn.fetchmany(sql, [write.params for write in run]):
        by_key[row[0]].append(tuple(row))
    for write in run:
        results[id(write)] = by_key[write.key]


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, instead of asyncpg's default reset (``RESET ALL``, ``CLOSE
    ALL``, ``UNLISTEN *``, releasing advisory locks: a second round trip after every query). The store's pooled
    connections never change their session: no settings, cursors, listeners or session locks (the coordinator's lock
    has a connection of its own). asyncpg still rolls back a transaction left open before this is called."""


@functools.lru_cache(maxsize=128)
def _numbered(sql: str) -> str:
    """The store's portable ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (its SQL holds no other ``?``)."""
    counter = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)

"""The manager's metadata: one interface, ``MetadataStore``, over SQLite (a file path) or PostgreSQL (a URL).

The rest of the manager calls only the methods here and never learns which database it has. Every query is written
once, below, in SQL that both engines run (``?`` placeholders, ``INSERT ... ON CONFLICT``, ``RETURNING``, no
extensions); a backend module (``store_sqlite.py``, ``store_postgres.py``) supplies the connection, the schema's DDL,
the file-id blocks and the transactions, and is the only code that imports a database driver.

Theory of operation: a file's row is written once, when its storage node has fsynced the bytes. Until then the upload
is only a *reservation* (its name, its new file id, its node): of two racing uploads of one name exactly one gets it,
and reads do not see it. On SQLite, where one manager is the only writer, reservations live in its memory: they cost no
commit, and a crash forgets them with the rest. On PostgreSQL, which several managers share, each is also a row of
``uploads`` (with the manager that holds it), so that a name is unique across managers and an orphan check anywhere
sees every upload in flight; a manager that dies leaves rows whose lease runs out, and the others drop them. Either
way the bytes a dead upload left on a node are an orphan that the node's next registration removes.

File ids are never reused, so a node still holding the bytes of a deleted or abandoned file can never confuse them with
a new one. They are handed out from memory, in blocks of ID_BLOCK claimed durably from the database (SQLite: a counter
row; PostgreSQL: a sequence, so that several processes could claim blocks without ever colliding): one commit per
ID_BLOCK uploads, and a restart begins with a fresh block, skipping what the crash left unused.

A commit is durable before the client hears ``stored``. Writes are *group-committed*: every write queued while a
transaction is being written joins the next one, so concurrent uploads share one flush instead of paying one each.

The schema is created and upgraded by the store itself when it opens, and its version is recorded in the database
(``schema_version``); a database written by a newer dfsd is refused rather than misread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..protocol import MAX_BUCKETS, PARTS_PREFIX, NameExists
from ..protocol.messages import BucketInfo

if TYPE_CHECKING:
    from .name_cache import NameCache


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    name: str
    node: int
    size: int
    sha256: bytes
    created: float
    lost: float | None
    meta: dict[str, str] | None = None


def file_record(row: tuple[Any, ...]) -> FileRecord:
    """A ``files`` row (``FILE_COLUMNS``) as a record; its metadata is kept as JSON text."""
    file_id, name, node, size, sha256, created, lost, meta = row
    return FileRecord(file_id, name, node, size, sha256, created, lost, None if meta is None else json.loads(meta))


def _meta_text(meta: dict[str, str] | None) -> str | None:
    return None if not meta else json.dumps(meta, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# A completion claims its upload for at most this long (seconds): a manager that died completing it leaves the claim
# behind, and after this the upload may be completed, aborted or expired again. Joining 10,000 parts of 5 GiB takes
# far less than an hour.
COMPLETION_LEASE = 3600.0


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A multipart upload in progress (``multipart_uploads``)."""

    upload_id: str
    name: str  # the file it becomes
    owner: str
    initiated: float
    meta: dict[str, str] | None
    completing: float | None  # when a completion claimed it (None: nobody is completing it)

    def takes_parts(self, now: float) -> bool:
        """No completion holds it (none claimed it within COMPLETION_LEASE of ``now``)."""
        return self.completing is None or self.completing < now - COMPLETION_LEASE


def _upload_record(row: tuple[Any, ...]) -> UploadRecord:
    upload_id, name, owner, initiated, meta, completing = row
    return UploadRecord(upload_id, name, owner, initiated, None if meta is None else json.loads(meta), completing)


@dataclass(frozen=True, slots=True)
class PartRecord:
    """One recorded part of a multipart upload (``multipart_parts``): the stored file ``name`` (id ``file_id``)."""

    upload_id: str
    number: int
    name: str
    file_id: int
    size: int
    md5: bytes
    created: float


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: int
    host: str
    port: int
    capacity: int
    free: int
    last_seen: float
    draining: bool


@dataclass(frozen=True, slots=True)
class ManagerRecord:
    id: str  # chosen at random when the manager starts
    address: str  # host:port where it listens
    started: float
    up: bool = True  # renewed within its lease
    coordinator: bool = False
    progress: Progress | None = None  # the coordinator's rebalancer, as it last renewed its record


@dataclass(frozen=True, slots=True)
class Progress:
    """A rebalancer's progress (``RebalanceInfo`` without the manager's own ``auto``), shared through the database."""

    running: bool
    moved: int
    failed: int
    remaining: int


@dataclass(frozen=True, slots=True)
class PostgresURL:
    """Where a PostgreSQL database is: ``postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME``. Shown without its password."""

    url: str

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


Location = Path | PostgresURL  # what ``dfsd manager --db`` names

POSTGRES_SCHEMES = ("postgresql", "postgres")


class UnknownDatabaseURL(argparse.ArgumentTypeError, ValueError):
    """A ``--db`` URL of a database other than PostgreSQL (an ArgumentTypeError, so argparse shows its message)."""


def database_location(text: str) -> Location:
    """``--db``'s value: a ``postgresql://`` URL, else the path of a SQLite file."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        return Path(text)
    if scheme.lower() not in POSTGRES_SCHEMES:
        raise UnknownDatabaseURL(
            f"unknown database URL scheme {scheme!r}: give a SQLite file path, or "
            "postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME"
        )
    return PostgresURL(text)


class StoreError(Exception):
    """A metadata database the manager cannot use, with what to do about it; ``exit_status`` is the command's."""

    exit_status: ClassVar[int] = 69  # EX_UNAVAILABLE


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or opened."""


class SchemaTooNew(StoreError):
    """The database was written by a newer dfsd, whose schema this one does not know."""


class NoDatabase(StoreError):
    exit_status = 66  # EX_NOINPUT


class BackupUnsupported(StoreError):
    exit_status = 64  # EX_USAGE: the right tool is another command


_FILE_COLUMNS = "id, name, node, size, sha256, created, lost, meta"
_NEW_FILE_COLUMNS = "id, name, node, size, sha256, created, meta"
# Stands, in a statement that records an upload's file (``_record``), for "the upload's reservation is still there".
HELD = "{upload still held}"
# Stands, in every statement that writes to ``files``, for the sole lease's fence (``store_postgres.py``): as it is, a
# condition that always holds (SQLite, whose one manager needs none; a tool's store); a store that fences its writes
# to ``files`` puts its fence in its place as it sends the statement.
FENCED = "TRUE /* the sole lease's fence */"
# A new name's row, written only while the upload's hold is there (``HELD``, filled in by ``_record``).
INSERT_FILE_SQL = (
    f"INSERT INTO files ({_NEW_FILE_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ? WHERE {HELD} AND {FENCED} "
    "ON CONFLICT (name) DO NOTHING RETURNING id"
)
_NODE_COLUMNS = "id, host, port, capacity, free, last_seen, draining"
_UPLOAD_COLUMNS = "upload_id, name, owner, initiated, meta, completing"
_PART_COLUMNS = "upload_id, number, name, file_id, size, md5, created"
# A file that is no part of a multipart upload being completed: the rebalancer neither picks nor switches such a part,
# whichever manager completes it, so the build finds every part where the records it read after its claim put it.
_NOT_COMPOSING = (
    "id NOT IN (SELECT parts.file_id FROM multipart_parts AS parts JOIN multipart_uploads AS uploads "
    "ON uploads.upload_id = parts.upload_id WHERE uploads.completing IS NOT NULL)"
)
RELOCATE_SQL = f"UPDATE files SET node = ? WHERE id = ? AND node = ? AND {_NOT_COMPOSING} AND {FENCED} RETURNING id"
FIND_SQL = f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ?"

# File ids claimed from the database at a time: one commit per this many uploads.
ID_BLOCK = 1024

# Ids per statement in bulk updates, below SQLite's default limit of 32,766 host parameters (PostgreSQL's: 65,535).
_BATCH = 10_000

Rows = list[tuple[Any, ...]]  # what a query, or a write's RETURNING clause, returned


@dataclass(slots=True)
class Write:
    """One write statement waiting for the next group commit."""

    sql: str
    params: Sequence[object]
    done: asyncio.Future[Rows]
    # What the first column of the one row this write returns (if it writes anything) holds, known beforehand: the
    # writes of one statement with distinct keys can then be sent in one go, their rows told apart by it.
    key: object = None


class Written:
    """What a write to ``files`` tells the names kept in memory, beside what its ``_writing_files`` names: the record
    it wrote, if it wrote a new name's (where no name is kept in memory, nothing)."""

    async def __aenter__(self) -> Written:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def wrote(self, record: FileRecord) -> None:
        return None


_UNWATCHED = Written()


def _name_exists(name: str) -> NameExists:
    return NameExists(f"file name already exists: {name!r}; delete it first or choose another name")


class MetadataStore(ABC):
    """The whole interface the manager sees. ``open`` picks the backend from the location."""

    shared: ClassVar[bool] = False  # several managers may use this database at once (PostgreSQL)
    name_cache: NameCache | None = None  # names kept in memory under the sole lease; None where none are (SQLite)

    def __init__(self) -> None:
        self._queued: list[Write] = []
        self._committer: asyncio.Task[None] | None = None
        self._reserved: dict[str, int] = {}  # name -> file id of every upload under way that claimed its name
        self._replacing: set[int] = set()  # file ids of the replacing uploads under way (they claim no name)
        self._next_id = self._id_limit = 0  # the block of ids in hand; empty until the first upload claims one
        self._extending: asyncio.Task[None] | None = None
        self.manager_id = uuid.uuid4().hex[:16]  # this manager, in the records that several managers share

    @staticmethod
    async def open(location: Location) -> MetadataStore:
        """Open (creating or upgrading its schema if needed) the database at ``location``."""
        if isinstance(location, PostgresURL):
            from .store_postgres import PostgresStore

            return await PostgresStore.connect(location)
        from .store_sqlite import SqliteStore

        return await SqliteStore.connect(location)

    @staticmethod
    async def backup(location: Location, dest: Path) -> int:
        """Copy the database at ``location`` to the file ``dest`` consistently, even while a manager writes to it;
        returns the copy's size in bytes. ``StoreError`` says why not, and what to do instead."""
        if isinstance(location, PostgresURL):
            from .store_postgres import PostgresStore

            return await PostgresStore.backup_to(location, dest)
        from .store_sqlite import SqliteStore

        return await SqliteStore.backup_to(location, dest)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._disconnect()

    # --- what a backend supplies --------------------------------------------------------------------------------------

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _read(self, sql: str, params: Sequence[object] = ()) -> Rows:
        """The rows of one query, outside any write transaction."""

    async def _lookup(self, sql: str, params: Sequence[object] = ()) -> Rows:
        """The rows of a point query on an index (a name, a bucket, an upload): what a read costs on the hot paths,
        so a backend may answer it without leaving the event loop's thread. By default, as any ``_read``."""
        return await self._read(sql, params)

    @abstractmethod
    async def _transaction(self, batch: list[Write]) -> list[Rows | Exception]:
        """Run every write of ``batch`` in one transaction and make it durable: each write's rows, or the error that
        failed that write alone. Raises (having rolled back) if the transaction as a whole failed."""

    @abstractmethod
    async def _claim_ids(self) -> int:
        """Durably claim a fresh block of ID_BLOCK file ids, never handed out before; returns its first id."""

    # --- group commit -------------------------------------------------------------------------------------------------

    async def _write(self, sql: str, params: Sequence[object] = (), *, key: object = None) -> Rows:
        """Run one write statement in the next group commit; returns once that transaction is durable."""
        (rows,) = await self._write_together(Write(sql, params, self._future(), key))
        return rows

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                results = await self._transaction(batch)
            except BaseException as err:  # the transaction failed (a disk or database error) or the manager stops
                for write in batch:
                    if isinstance(err, Exception):
                        write.done.set_exception(err)
                    else:
                        write.done.cancel()
                if not isinstance(err, Exception):
                    raise
                continue
            for write, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    write.done.set_exception(result)
                else:
                    write.done.set_result(result)

    # --- uploads ------------------------------------------------------------------------------------------------------

    async def reserve(self, name: str, node: int, *, replace: bool = False) -> int:
        """Claim ``name`` for an upload to ``node`` and return the new file's id; ``NameExists`` if it is taken. The
        claim lasts until ``release``. A ``replace`` upload claims no name (it may replace a stored file, and races
        with other replacements are settled by their commits), only a new id, recorded in flight like any upload."""
        if replace:
            file_id = await self._new_id()
            self._replacing.add(file_id)
            try:
                await self._hold(None, file_id, node)  # no name to claim: it always succeeds
            except BaseException:
                self._replacing.discard(file_id)
                raise
            return file_id
        if name in self._reserved:
            raise _name_exists(name)
        self._reserved[name] = 0  # before any await: a racing upload of the same name sees it
        try:
            file_id = await self._new_id()
            if not await self._hold(name, file_id, node):
                raise _name_exists(name)
        except BaseException:
            del self._reserved[name]
            raise
        self._reserved[name] = file_id
        return file_id

    async def _new_id(self) -> int:
        while self._next_id >= self._id_limit:
            if self._extending is None or self._extending.done():
                self._extending = asyncio.create_task(self._next_block())
            await asyncio.shield(self._extending)
        file_id = self._next_id
        self._next_id += 1
        return file_id

    async def _next_block(self) -> None:
        first = await self._claim_ids()
        self._next_id, self._id_limit = first, first + ID_BLOCK

    async def release(self, name: str, file_id: int | None = None) -> None:
        """The upload of ``name`` (a replacement: the one with ``file_id``) is over (committed or failed): free its
        reservation."""
        if file_id is not None and file_id in self._replacing:
            self._replacing.discard(file_id)
            await self._unhold(file_id)
        elif held := self._reserved.pop(name, None):
            await self._unhold(held)

    async def uploading(self) -> set[int]:
        """The file ids of the uploads under way, through this manager or (on a shared database) any other."""
        mine = {file_id for file_id in self._reserved.values() if file_id} | self._replacing
        return mine | await self._held_elsewhere()

    # Reservations seen by other managers: only a shared database (PostgreSQL) has them. On SQLite, the one manager's
    # memory is the whole truth: there ``_hold`` only looks the name up, and the others do nothing.

    async def _hold(self, name: str | None, file_id: int, node: int) -> bool:
        """Claim ``name`` (None: a replacing upload, which claims none) for upload ``file_id``: False if a file of
        that name is stored or (on a shared database) another manager's upload holds it. A shared database records
        the reservation where other managers see it, so its bytes are no orphan and its name is taken; the one
        statement that does also looks the name up, as of when it began: a file of that name committed through
        another manager just after is refused by this upload's own commit instead (``commit``)."""
        return name is None or await self.find(name) is None

    async def _unhold(self, file_id: int) -> None:
        """Drop the recorded reservation of upload ``file_id`` (failures are left to ``tidy_reservations``)."""
        return None

    async def _held_elsewhere(self) -> set[int]:
        return set()

    async def _record(self, file_id: int, sql: str, params: Sequence[object]) -> Rows:
        """Run ``sql``, which writes the row of upload ``file_id``'s file and returns its id if it did, where the
        condition ``HELD`` is true. A backend that records reservations makes it "the upload's reservation is still
        there" (``ServersUnavailable`` if it is not) and ends the reservation in the same statement: the row and the
        end of the reservation are one commit, and ``release`` then has nothing left to write. Here, where the one
        manager's memory holds the reservations, it is always true."""
        return await self._write(sql.replace(HELD, "1"), params)

    async def tidy_reservations(self, manager_lease: float) -> None:
        """Drop recorded reservations that no upload holds any more: this manager's own that a failed release left
        behind (the database was down), and those of managers whose lease expired (they died)."""
        return None

    async def files_per_node(self) -> dict[int, int] | None:
        """node id -> files stored there plus uploads to it through other managers, as the database says now; None
        where this manager alone places files and its own counts are the truth (SQLite)."""
        return None

    # --- several managers ---------------------------------------------------------------------------------------------

    async def try_coordinate(self) -> bool:
        """Whether this manager coordinates (runs the cluster-wide jobs) now: take or keep the database's coordinator
        lock. On SQLite the one manager always does."""
        return True

    async def holds_lock(self) -> bool:
        """Whether this manager still holds the coordinator's lock, checked now: asked just before an act that a
        coordinator alone may do (removing orphans), so that one which has just lost it does not act beside its
        successor. On SQLite the one manager always does."""
        return True

    async def renew_manager(self, manager: ManagerRecord, coordinating: bool, progress: Progress) -> bool:
        """Record (or refresh) this manager's entry, whose lease it keeps by calling this again and again, with its
        rebalancer's ``progress``; True if another manager asked the coordinator (this one) for a rebalance since."""
        return False

    async def ask_rebalance(self) -> None:
        """Ask the coordinator, whichever manager it is, for a rebalance (it learns of it when it next renews)."""
        return None

    async def managers(self, lease: float) -> list[ManagerRecord] | None:
        """Every manager recorded in the database, with ``up`` meaning renewed within ``lease`` seconds by the
        database's clock; None where there is no such record (SQLite: one manager)."""
        return None

    # The sole lease (``sole_lease.py``): where several managers may share the database, the one alone on it keeps
    # names in memory. SQLite has one manager per database, which never needs it.

    def fence_files(self) -> None:
        """This store serves a manager: from now on its writes to ``files`` wait for the sole lease's rights (a
        tool's store, e.g. ``dfsd migrate``'s, writes while no manager runs)."""
        return None

    async def keep_sole_lease(self, manager: ManagerRecord, lease: float) -> None:
        """Renew this manager's view of the sole lease (and its record's ``last_seen``; managers not renewed within
        ``lease`` seconds are not up): called every TICK. A database that fails only lets the rights run out."""
        return None

    def _writing_files(
        self, names: Sequence[str] = (), ids: Sequence[int] = (), every: bool = False
    ) -> AbstractAsyncContextManager[Written]:
        """Around every write to ``files``, naming what it may change (``every``: rows it cannot tell): it waits for
        the right to write, and tells the names kept in memory what was written (``Written``). Each statement it sends
        that writes to ``files`` holds ``FENCED``."""
        return _UNWATCHED

    async def commit(
        self,
        file_id: int,
        name: str,
        node: int,
        size: int,
        sha256: bytes,
        created: float,
        meta: dict[str, str] | None = None,
    ) -> None:
        """The upload's bytes are durable on ``node``: record the file (with its metadata), which makes it visible."""
        async with self._writing_files() as written:  # a new name: no name kept in memory changes
            rows = await self._record(
                file_id,
                INSERT_FILE_SQL,
                (file_id, name, node, size, sha256, created, _meta_text(meta)),
            )
            if not rows:  # the reservation was released early (the upload was cancelled), or lost a race (``_hold``)
                raise _name_exists(name)
            written.wrote(FileRecord(file_id, name, node, size, sha256, created, None, dict(meta) if meta else None))

    async def commit_replacing(
        self,
        file_id: int,
        name: str,
        node: int,
        size: int,
        sha256: bytes,
        created: float,
        meta: dict[str, str] | None = None,
    ) -> FileRecord | None:
        """Like ``commit``, but a file stored under ``name`` is replaced: the name's row switches to the new file in
        one statement, so a reader finds the old file or the new one, never neither. Returns the replaced file, whose
        bytes the caller removes, or None. Of concurrent replacements the last to commit wins: the switch applies only
        to the row this call read, and is tried again on the current one if another commit came between."""
        async with self._writing_files(names=(name,)):
            while True:
                current = await self.find(name, fresh=True)
                if current is None:
                    rows = await self._record(
                        file_id,
                        INSERT_FILE_SQL,
                        (file_id, name, node, size, sha256, created, _meta_text(meta)),
                    )
                else:
                    rows = await self._record(
                        file_id,
                        "UPDATE files SET id = ?, node = ?, size = ?, sha256 = ?, created = ?, lost = NULL, meta = ? "
                        f"WHERE name = ? AND id = ? AND {HELD} AND {FENCED} RETURNING id",
                        (file_id, node, size, sha256, created, _meta_text(meta), name, current.id),
                    )
                if rows:
                    return current

    # --- files --------------------------------------------------------------------------------------------------------

    async def find(self, name: str, *, fresh: bool = False) -> FileRecord | None:
        """The file stored under ``name``, or None. A backend may answer from names kept in memory while they are
        exact (``name_cache.py``); ``fresh`` asks the database itself."""
        rows = await self._lookup(FIND_SQL, (name,))
        return file_record(rows[0]) if rows else None

    async def remove(self, name: str) -> FileRecord | None:
        """Delete the stored file ``name`` and return what it was, or None if there was none."""
        async with self._writing_files(names=(name,)):
            rows = await self._write(
                f"DELETE FROM files WHERE name = ? AND {FENCED} RETURNING name, {_FILE_COLUMNS}", (name,), key=name
            )
        return file_record(rows[0][1:]) if rows else None

    async def remove_exact(self, name: str, file_id: int) -> FileRecord | None:
        """Delete the stored file ``name`` only if it is still file ``file_id``; return it, or None."""
        async with self._writing_files(names=(name,)):
            rows = await self._write(
                f"DELETE FROM files WHERE name = ? AND id = ? AND {FENCED} RETURNING {_FILE_COLUMNS}", (name, file_id)
            )
        return file_record(rows[0]) if rows else None

    async def list_files(self, prefix: str, after: str | None, limit: int, *, parts: bool = False) -> list[FileRecord]:
        """Stored files whose names start with ``prefix``, in byte order, after ``after``, at most ``limit``; the
        multipart uploads' parts (``PARTS_PREFIX``) only with ``parts``."""
        within, params = _starting_with(prefix)
        query = f"SELECT {_FILE_COLUMNS} FROM files WHERE {within}"
        if after is not None:
            query += " AND name > ?"
            params.append(after)
        if not parts:
            query += " AND (name < ? OR name >= ?)"
            params += [PARTS_PREFIX, _prefix_end(PARTS_PREFIX)]
        query += " ORDER BY name LIMIT ?"
        params.append(limit)
        return [file_record(row) for row in await self._read(query, params)]

    async def ids_on_node(self, node: int) -> tuple[set[int], set[int], set[int]]:
        """In one snapshot: ids of the files recorded on ``node``, those of them marked lost, and the ids of every
        upload still under way (on any node)."""
        uploading = await self.uploading()  # first: an upload committed meanwhile is in the rows instead
        rows = await self._read("SELECT id, lost FROM files WHERE node = ?", (node,))
        return {row[0] for row in rows}, {row[0] for row in rows if row[1] is not None}, uploading

    async def unrecorded_on(self, node: int, ids: list[int]) -> set[int]:
        """Those of ``ids`` that no record places on ``node`` and no upload is writing now."""
        known = await self.uploading()
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            rows = await self._read(
                f"SELECT id FROM files WHERE id IN ({','.join('?' * len(batch))}) AND node = ?", (*batch, node)
            )
            known.update(row[0] for row in rows)
        return set(ids) - known

    async def set_lost(self, ids: list[int], when: float | None, node: int | None = None) -> None:
        """Mark files lost at ``when`` (or found again, with None); given ``node``, only those still recorded there
        (one that a move took elsewhere meanwhile was not lost by this node)."""
        where = "" if node is None else " AND node = ?"
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            async with self._writing_files(ids=batch):
                await self._write(
                    f"UPDATE files SET lost = ? WHERE id IN ({','.join('?' * len(batch))}){where} AND {FENCED}",
                    (when, *batch) if node is None else (when, *batch, node),
                )

    async def lost_files(self, limit: int) -> tuple[int, list[str]]:
        """How many stored files are lost, and the names of the first ``limit`` of them."""
        (count,) = (await self._read("SELECT count(*) FROM files WHERE lost IS NOT NULL"))[0]
        names = await self._read("SELECT name FROM files WHERE lost IS NOT NULL ORDER BY name LIMIT ?", (limit,))
        return count, [name for (name,) in names]

    async def lost_by_node(self) -> dict[int, int]:
        rows = await self._read("SELECT node, count(*) FROM files WHERE lost IS NOT NULL GROUP BY node")
        return {node: count for node, count in rows}

    async def files_on_node(self, node: int, after_id: int, limit: int) -> list[FileRecord]:
        """Stored files recorded on ``node`` with ids above ``after_id``, in id order: a page of a walk over a node."""
        rows = await self._read(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE node = ? AND id > ? ORDER BY id LIMIT ?", (node, after_id, limit)
        )
        return [file_record(row) for row in rows]

    async def movable(self, node: int, limit: int, exclude: set[int]) -> list[FileRecord]:
        """Up to ``limit`` stored, present files on ``node``, skipping the ids in ``exclude``."""
        rows = await self._read(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE node = ? AND lost IS NULL AND {_NOT_COMPOSING} "
            "ORDER BY id LIMIT ?",
            (node, limit + len(exclude)),
        )
        return [file_record(row) for row in rows if row[0] not in exclude][:limit]

    async def relocate(self, file_id: int, source: int, target: int) -> bool:
        """Point file ``file_id`` at ``target`` if it is still stored on ``source`` and is no part of an upload being
        completed; False if it changed meanwhile, or is such a part (the move is given up: it stays on ``source``), or,
        on a shared database, this manager no longer coordinates (only the coordinator may switch a move)."""
        async with self._writing_files(ids=(file_id,)):
            rows = await self._write(RELOCATE_SQL, (target, file_id, source))
        return len(rows) == 1

    async def usage_by_node(self) -> dict[int, tuple[int, int]]:
        """node id -> (file count, bytes) of stored files."""
        # The cast: PostgreSQL sums integers as NUMERIC.
        rows = await self._read(
            "SELECT node, count(*), CAST(coalesce(sum(size), 0) AS BIGINT) FROM files GROUP BY node"
        )
        return {node: (files, size) for node, files, size in rows}

    # --- buckets ------------------------------------------------------------------------------------------------------

    async def create_bucket(self, name: str, owner: str, created: float) -> bool:
        """Record bucket ``name``; False if a bucket of that name exists, or MAX_BUCKETS do."""
        rows = await self._write(
            "INSERT INTO buckets (name, owner, created) SELECT ?, ?, ? WHERE (SELECT count(*) FROM buckets) < ? "
            "ON CONFLICT (name) DO NOTHING RETURNING name",
            (name, owner, created, MAX_BUCKETS),
        )
        return bool(rows)

    async def bucket(self, name: str) -> BucketInfo | None:
        rows = await self._lookup("SELECT name, owner, created FROM buckets WHERE name = ?", (name,))
        return BucketInfo(*rows[0]) if rows else None

    async def buckets(self) -> list[BucketInfo]:
        """Every bucket, in byte order of the names."""
        return [BucketInfo(*row) for row in await self._read("SELECT name, owner, created FROM buckets ORDER BY name")]

    async def delete_bucket(self, name: str, owner: str) -> bool:
        """Forget bucket ``name`` if ``owner`` owns it and no stored file's name starts with ``name/``, in one
        statement (a file committed meanwhile keeps the bucket); False if not."""
        prefix = name + "/"
        rows = await self._write(
            "DELETE FROM buckets WHERE name = ? AND owner = ? "
            "AND NOT EXISTS (SELECT 1 FROM files WHERE name >= ? AND name < ?) RETURNING name",
            (name, owner, prefix, _prefix_end(prefix)),
        )
        return bool(rows)

    # --- multipart uploads --------------------------------------------------------------------------------------------

    async def create_upload(self, upload: UploadRecord) -> None:
        await self._write(
            f"INSERT INTO multipart_uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
            (upload.upload_id, upload.name, upload.owner, upload.initiated, _meta_text(upload.meta)),
        )

    async def find_upload(self, upload_id: str) -> UploadRecord | None:
        rows = await self._lookup(f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ?", (upload_id,))
        return _upload_record(rows[0]) if rows else None

    async def list_uploads(self, prefix: str, after: tuple[str, str] | None, limit: int) -> list[UploadRecord]:
        """Uploads whose names start with ``prefix``, by name then id, after ``after`` (name, id), at most ``limit``."""
        within, params = _starting_with(prefix)
        query = f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE {within}"
        if after is not None:
            query += " AND (name > ? OR (name = ? AND upload_id > ?))"
            params += [after[0], *after]
        query += " ORDER BY name, upload_id LIMIT ?"
        params.append(limit)
        return [_upload_record(row) for row in await self._read(query, params)]

    async def uploads_begun_before(self, when: float, limit: int) -> list[UploadRecord]:
        """At most ``limit`` uploads created before ``when``, oldest first."""
        rows = await self._read(
            f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE initiated < ? ORDER BY initiated LIMIT ?",
            (when, limit),
        )
        return [_upload_record(row) for row in rows]

    async def claim_upload(self, upload_id: str, now: float, stale_before: float) -> bool:
        """Mark the upload as being completed (parts can no longer be recorded, nor the upload aborted) unless another
        completion holds it, claimed at ``stale_before`` or later; False if it is not there or held."""
        rows = await self._write(
            "UPDATE multipart_uploads SET completing = ? WHERE upload_id = ? "
            "AND (completing IS NULL OR completing < ?) RETURNING upload_id",
            (now, upload_id, stale_before),
        )
        return bool(rows)

    async def unclaim_upload(self, upload_id: str) -> None:
        """The completion failed: the upload takes parts again, and may be completed or aborted."""
        await self._write("UPDATE multipart_uploads SET completing = NULL WHERE upload_id = ?", (upload_id,))

    async def forget_upload(self, upload_id: str, stale_before: float | None) -> bool:
        """Delete the upload's record and its parts' (not their files); False if it is not there, or (unless
        ``stale_before`` is None: the caller completed it) a completion claimed it at ``stale_before`` or later."""
        held = "" if stale_before is None else " AND (completing IS NULL OR completing < ?)"
        forgotten, _ = await self._write_together(
            Write(
                f"DELETE FROM multipart_uploads WHERE upload_id = ?{held} RETURNING upload_id",
                (upload_id,) if stale_before is None else (upload_id, stale_before),
                self._future(),
            ),
            Write("DELETE FROM multipart_parts WHERE upload_id = ?", (upload_id,), self._future()),
        )
        return bool(forgotten)

    async def record_part(self, part: PartRecord, stale_before: float) -> tuple[bool, PartRecord | None]:
        """Record ``part``, replacing the part of its number: (False, None) if the upload is not there or is being
        completed (claimed at ``stale_before`` or later), else (True, the part replaced or None). Of concurrent
        records of one number the last wins: the switch applies only to the row this call read."""
        open_upload = (
            "EXISTS (SELECT 1 FROM multipart_uploads WHERE upload_id = ? AND (completing IS NULL OR completing < ?))"
        )
        values = (part.name, part.file_id, part.size, part.md5, part.created)
        while True:
            current = await self.find_part(part.upload_id, part.number)
            if current is None:
                rows = await self._write(
                    f"INSERT INTO multipart_parts ({_PART_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ? WHERE {open_upload} "
                    "ON CONFLICT (upload_id, number) DO NOTHING RETURNING number",
                    (part.upload_id, part.number, *values, part.upload_id, stale_before),
                )
            else:
                rows = await self._write(
                    "UPDATE multipart_parts SET name = ?, file_id = ?, size = ?, md5 = ?, created = ? "
                    f"WHERE upload_id = ? AND number = ? AND file_id = ? AND {open_upload} RETURNING number",
                    (*values, part.upload_id, part.number, current.file_id, part.upload_id, stale_before),
                )
            if rows:
                return True, current
            upload = await self.find_upload(part.upload_id)
            if upload is None or (upload.completing is not None and upload.completing >= stale_before):
                return False, None

    async def find_part(self, upload_id: str, number: int) -> PartRecord | None:
        rows = await self._lookup(
            f"SELECT {_PART_COLUMNS} FROM multipart_parts WHERE upload_id = ? AND number = ?", (upload_id, number)
        )
        return PartRecord(*rows[0]) if rows else None

    async def list_parts(self, upload_id: str, after: int, limit: int) -> list[PartRecord]:
        """The upload's parts numbered above ``after``, by number, at most ``limit``."""
        rows = await self._read(
            f"SELECT {_PART_COLUMNS} FROM multipart_parts WHERE upload_id = ? AND number > ? ORDER BY number LIMIT ?",
            (upload_id, after, limit),
        )
        return [PartRecord(*row) for row in rows]

    async def _write_together(self, *writes: Write) -> list[Rows]:
        """Queue ``writes`` back to back, so that they join the same group commit; their rows, in order."""
        self._queued.extend(writes)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        # Shielded: a caller that gives up does not take its writes out of the batch.
        return list(await asyncio.shield(asyncio.gather(*(write.done for write in writes))))

    @staticmethod
    def _future() -> asyncio.Future[Rows]:
        return asyncio.get_running_loop().create_future()

    # --- nodes --------------------------------------------------------------------------------------------------------

    async def save_node(self, node: NodeRecord) -> None:
        await self._write(
            f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "host = excluded.host, port = excluded.port, capacity = excluded.capacity, free = excluded.free, "
            "last_seen = excluded.last_seen",
            (node.id, node.host, node.port, node.capacity, node.free, node.last_seen, int(node.draining)),
        )

    async def set_draining(self, node_id: int, draining: bool) -> None:
        """Only ``drain`` changes this: a node's record, saved by every manager that has a session with it, keeps it."""
        await self._write("UPDATE nodes SET draining = ? WHERE id = ?", (int(draining), node_id))

    async def forget_node(self, node_id: int) -> None:
        await self._write("DELETE FROM nodes WHERE id = ?", (node_id,))

    async def nodes(self) -> list[NodeRecord]:
        rows = await self._read(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY id")
        return [
            NodeRecord(node_id, host, port, capacity, free, last_seen, bool(draining))
            for node_id, host, port, capacity, free, last_seen, draining in rows
        ]

    # --- copying to another database (dfsd migrate) -------------------------------------------------------------------

    # What ``dfsd migrate`` copies, and the columns of each, in the order a digest reads them. Uploads in flight,
    # reservations and managers' leases are not copied: the cluster is stopped, so none of them is alive. Multipart
    # uploads are: they outlive any manager (their parts are files, which the next expiry would sweep away without
    # them). Each table's first ``MIGRATED_KEYS`` columns (one unless said) are its key, the order of its rows.
    MIGRATED_TABLES: ClassVar[dict[str, str]] = {
        "files": _FILE_COLUMNS,
        "nodes": _NODE_COLUMNS,
        "buckets": "name, owner, created",
        "multipart_uploads": "upload_id, name, owner, initiated, meta, completing",
        "multipart_parts": "upload_id, number, name, file_id, size, md5, created",
    }
    MIGRATED_KEYS: ClassVar[dict[str, int]] = {"multipart_parts": 2}

    async def row_counts(self) -> dict[str, int]:
        """How many rows each copied table holds."""
        return {table: (await self._read(f"SELECT count(*) FROM {table}"))[0][0] for table in self.MIGRATED_TABLES}

    def migrated_key(self, row: Sequence[object], table: str) -> tuple[object, ...]:
        """The key of one of ``table``'s rows, as ``export_rows`` takes it for ``after``."""
        return tuple(row[: self.MIGRATED_KEYS.get(table, 1)])

    async def export_rows(self, table: str, after: tuple[object, ...] | None, limit: int) -> Rows:
        """A page of ``table``'s rows in the order of its key, those whose key is above ``after`` (None: from the
        first): a walk over the whole table."""
        columns = self.MIGRATED_TABLES[table]
        key = ", ".join(columns.split(", ")[: self.MIGRATED_KEYS.get(table, 1)])
        if after is None:
            return await self._read(f"SELECT {columns} FROM {table} ORDER BY {key} LIMIT ?", (limit,))
        above = f"({key}) > ({', '.join('?' * len(after))})"
        return await self._read(f"SELECT {columns} FROM {table} WHERE {above} ORDER BY {key} LIMIT ?", (*after, limit))

    async def import_rows(self, table: str, rows: Rows) -> None:
        """Insert ``rows`` (as ``export_rows`` gives them) into ``table``, in one transaction. For ``dfsd migrate``,
        while the cluster is stopped: its rows of ``files`` hold no ``FENCED`` (a list of values takes no condition),
        and no manager keeps names in memory meanwhile."""
        if not rows:
            return
        columns = self.MIGRATED_TABLES[table]
        row = f"({', '.join('?' * len(rows[0]))})"
        async with self._writing_files(every=table == "files"):
            await self._write(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(rows))}", [v for r in rows for v in r]
            )

    @abstractmethod
    async def next_file_id(self) -> int:
        """The first file id of the next block to be claimed: no id at or above it has been handed out."""

    @abstractmethod
    async def set_next_file_id(self, next_id: int) -> None:
        """Make ``next_id`` the first id of the next block claimed (a copy must never hand out an id again)."""


def schema_steps_to_run(recorded: int, steps: Sequence[str], where: object) -> range:
    """Which of a backend's schema ``steps`` (step i takes a database from version i to i + 1; version 0 is empty)
    a database at version ``recorded`` still needs; ``SchemaTooNew`` if it is past them all."""
    if recorded > len(steps):
        raise SchemaTooNew(
            f"the database at {where} has schema version {recorded}, newer than this dfsd knows ({len(steps)}): "
            "run the dfsd release that wrote it, or a later one"
        )
    return range(recorded, len(steps))


def _starting_with(prefix: str) -> tuple[str, list[object]]:
    """The condition (and its parameters) for names that start with ``prefix``: a range of names, which their index
    serves, rather than LIKE, whose wildcards a name may hold."""
    end = _prefix_end(prefix)
    if end is None:
        return "name >= ?", [prefix]
    return "name >= ? AND name < ?", [prefix, end]


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: there is no bound).

    Both backends compare names as UTF-8 bytes (SQLite's BINARY collation, PostgreSQL's "C"), which orders like code
    points; incrementing the last code point that can be incremented, skipping the surrogates that UTF-8 cannot hold,
    gives the bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None

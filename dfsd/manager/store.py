"""The manager's metadata: the one module that touches SQLite.

Theory of operation: a file's row is written once, when its storage node has fsynced the bytes. Until then the upload
is only a *reservation* in memory (its name and its new file id): of two racing uploads of one name exactly one gets
it, and reads do not see it. A reservation costs no commit, so an upload waits for one transaction, not two; a crash
forgets reservations with the rest of memory, and the bytes such an upload may have left on a node are an orphan that
the node's next registration removes.

File ids are never reused, so a node still holding the bytes of a deleted or abandoned file can never confuse them with
a new one. They are handed out from memory, in blocks recorded ahead (``ids.next``: no id at or above it has been
given out): one commit per ID_BLOCK uploads, and a restart begins after the recorded block, skipping what the crash
left unused.

The database runs in WAL mode with synchronous=FULL: a commit is on disk before the client hears ``stored``. Writes
are *group-committed*: every write queued while a transaction is being written joins the next one, so concurrent
uploads share one fsync instead of paying one each (a failed statement fails only its own caller). The hot lookup by
name reads through a second, plain sqlite3 connection in the event loop's thread: a point query on an index takes
microseconds, less than aiosqlite's hop to its thread. WAL lets that reader see every committed write at once.

``MetadataStore`` is the whole interface the manager sees, so another backend can replace SQLite without rewiring it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from ..protocol import NameExists

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS nodes (
    id        INTEGER PRIMARY KEY,
    host      TEXT NOT NULL,
    port      INTEGER NOT NULL,
    capacity  INTEGER NOT NULL,
    free      INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    draining  INTEGER NOT NULL DEFAULT 0  -- being retired: its files move to other nodes, it gets no new ones
);
"""


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    name: str
    node: int
    size: int
    sha256: bytes
    created: float
    lost: float | None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: int
    host: str
    port: int
    capacity: int
    free: int
    last_seen: float
    draining: bool


_FILE_COLUMNS = "id, name, node, size, sha256, created, lost"


# File ids recorded as handed out at a time: one commit per this many uploads.
ID_BLOCK = 1024

Rows = list[tuple[Any, ...]]  # what a RETURNING clause returned


@dataclass(slots=True)
class _Write:
    sql: str
    params: Sequence[object]
    done: asyncio.Future[Rows]


class MetadataStore:
    def __init__(self, db: aiosqlite.Connection, reader: sqlite3.Connection, next_id: int) -> None:
        self._db = db
        self._reader = reader
        self._queued: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None
        self._reserved: dict[str, int] = {}  # name -> file id of every upload under way
        self._next_id = self._id_limit = next_id
        self._extending: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> MetadataStore:
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.executescript(_SCHEMA)
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("PRAGMA query_only = ON")
        recorded = reader.execute("SELECT max(next) FROM ids").fetchone()[0]
        highest = reader.execute("SELECT max(id) FROM files").fetchone()[0]
        next_id = max(recorded or 1, (highest or 0) + 1)  # skips what a crash left unused
        store = cls(db, reader, next_id)
        await store._write("INSERT OR REPLACE INTO ids (rowid, next) VALUES (1, ?)", (next_id,))
        return store

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        self._reader.close()
        await self._db.close()

    async def _write(self, sql: str, params: Sequence[object] = ()) -> Rows:
        """Run one write statement in the next group commit; returns once that transaction is on disk."""
        done: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self._queued.append(_Write(sql, params, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await asyncio.shield(done)  # a caller that gives up does not take its write out of the batch

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            results: list[Rows | BaseException] = []
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                for write in batch:
                    try:  # one hop to aiosqlite's thread per statement: the batch costs little more than its fsync
                        results.append([tuple(row) for row in await self._db.execute_fetchall(write.sql, write.params)])
                    except sqlite3.IntegrityError as err:  # this statement only; the others go on
                        results.append(err)
                await self._db.execute("COMMIT")
            except BaseException as err:  # the transaction failed (a disk error) or the manager is stopping
                await asyncio.shield(self._rollback())
                for write in batch:
                    if isinstance(err, Exception):
                        write.done.set_exception(err)
                    else:
                        write.done.cancel()
                if not isinstance(err, Exception):
                    raise
                continue
            for write, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    write.done.set_exception(result)
                else:
                    write.done.set_result(result)

    async def _rollback(self) -> None:
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    async def reserve(self, name: str) -> int:
        """Claim ``name`` for an upload and return the new file's id; ``NameExists`` if it is taken. The claim lasts
        until ``release``."""
        if name in self._reserved or self._lookup(name) is not None:
            raise NameExists(f"file name already exists: {name!r}; delete it first or choose another name")
        self._reserved[name] = 0  # before any await: a racing upload of the same name sees it
        try:
            while self._next_id >= self._id_limit:
                if self._extending is None or self._extending.done():
                    self._extending = asyncio.create_task(self._record_ids(self._id_limit + ID_BLOCK))
                await asyncio.shield(self._extending)
        except BaseException:
            del self._reserved[name]
            raise
        self._reserved[name] = file_id = self._next_id
        self._next_id += 1
        return file_id

    async def _record_ids(self, limit: int) -> None:
        await self._write("UPDATE ids SET next = ?", (limit,))
        self._id_limit = limit

    def release(self, name: str) -> None:
        """The upload of ``name`` is over (committed or failed): free its reservation."""
        self._reserved.pop(name, None)

    async def commit(self, file_id: int, name: str, node: int, size: int, sha256: bytes, created: float) -> None:
        """The upload's bytes are durable on ``node``: record the file, which makes it visible."""
        try:
            await self._write(
                "INSERT INTO files (id, name, node, size, sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, name, node, size, sha256, created),
            )
        except sqlite3.IntegrityError:  # only if the reservation was released early (the upload was cancelled)
            raise NameExists(f"file name already exists: {name!r}; delete it first or choose another name") from None

    async def find(self, name: str) -> FileRecord | None:
        return self._lookup(name)

    def _lookup(self, name: str) -> FileRecord | None:
        row = self._reader.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ?", (name,)).fetchone()
        return None if row is None else FileRecord(*row)

    async def remove(self, name: str) -> FileRecord | None:
        """Delete the stored file ``name`` and return what it was, or None if there was none."""
        rows = await self._write(f"DELETE FROM files WHERE name = ? RETURNING {_FILE_COLUMNS}", (name,))
        return FileRecord(*rows[0]) if rows else None

    async def list_files(self, prefix: str, after: str | None, limit: int) -> list[FileRecord]:
        """Stored files whose names start with ``prefix``, in byte order, after ``after``, at most ``limit``."""
        query = f"SELECT {_FILE_COLUMNS} FROM files WHERE name >= ?"
        params: list[object] = [prefix]
        end = _prefix_end(prefix)
        if end is not None:
            query += " AND name < ?"
            params.append(end)
        if after is not None:
            query += " AND name > ?"
            params.append(after)
        query += " ORDER BY name LIMIT ?"
        params.append(limit)
        cursor = await self._db.execute(query, params)
        return [FileRecord(*row) for row in await cursor.fetchall()]

    async def ids_on_node(self, node: int) -> tuple[set[int], set[int], set[int]]:
        """In one snapshot: ids of the files recorded on ``node``, those of them marked lost, and the ids of every
        upload still under way (on any node)."""
        uploading = self.uploading()  # before the await: an upload committed meanwhile is in the rows instead
        cursor = await self._db.execute("SELECT id, lost FROM files WHERE node = ?", (node,))
        rows = await cursor.fetchall()
        return {row[0] for row in rows}, {row[0] for row in rows if row[1] is not None}, uploading

    def uploading(self) -> set[int]:
        """The file ids of the uploads under way."""
        return {file_id for file_id in self._reserved.values() if file_id}

    async def unrecorded_on(self, node: int, ids: list[int]) -> set[int]:
        """Those of ``ids`` that no record places on ``node`` and no upload is writing now."""
        known = self.uploading()
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            cursor = await self._db.execute(
                f"SELECT id FROM files WHERE id IN ({','.join('?' * len(batch))}) AND node = ?", (*batch, node)
            )
            known.update(row[0] for row in await cursor.fetchall())
        return set(ids) - known

    async def set_lost(self, ids: list[int], when: float | None) -> None:
        """Mark files lost at ``when`` (or found again, with None)."""
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            await self._write(f"UPDATE files SET lost = ? WHERE id IN ({','.join('?' * len(batch))})", (when, *batch))

    async def lost_files(self, limit: int) -> tuple[int, list[str]]:
        """How many stored files are lost, and the names of the first ``limit`` of them."""
        cursor = await self._db.execute("SELECT count(*) FROM files WHERE lost IS NOT NULL")
        row = await cursor.fetchone()
        cursor = await self._db.execute("SELECT name FROM files WHERE lost IS NOT NULL ORDER BY name LIMIT ?", (limit,))
        return (row[0] if row else 0), [name for (name,) in await cursor.fetchall()]

    async def lost_by_node(self) -> dict[int, int]:
        cursor = await self._db.execute("SELECT node, count(*) FROM files WHERE lost IS NOT NULL GROUP BY node")
        return {node: count for node, count in await cursor.fetchall()}

    async def files_on_node(self, node: int, after_id: int, limit: int) -> list[FileRecord]:
        """Stored files recorded on ``node`` with ids above ``after_id``, in id order: a page of a walk over a node."""
        cursor = await self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE node = ? AND id > ? ORDER BY id LIMIT ?",
            (node, after_id, limit),
        )
        return [FileRecord(*row) for row in await cursor.fetchall()]

    async def movable(self, node: int, limit: int, exclude: set[int]) -> list[FileRecord]:
        """Up to ``limit`` stored, present files on ``node``, skipping the ids in ``exclude``."""
        cursor = await self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE node = ? AND lost IS NULL ORDER BY id LIMIT ?",
            (node, limit + len(exclude)),
        )
        records = [FileRecord(*row) for row in await cursor.fetchall() if row[0] not in exclude]
        return records[:limit]

    async def relocate(self, file_id: int, source: int, target: int) -> bool:
        """Point file ``file_id`` at ``target`` if it is still stored on ``source``; False if it changed meanwhile."""
        rows = await self._write(
            "UPDATE files SET node = ? WHERE id = ? AND node = ? RETURNING id", (target, file_id, source)
        )
        return len(rows) == 1

    async def usage_by_node(self) -> dict[int, tuple[int, int]]:
        """node id -> (file count, bytes) of stored files."""
        cursor = await self._db.execute("SELECT node, count(*), coalesce(sum(size), 0) FROM files GROUP BY node")
        return {node: (files, size) for node, files, size in await cursor.fetchall()}

    async def save_node(self, node: NodeRecord) -> None:
        await self._write(
            "INSERT OR REPLACE INTO nodes (id, host, port, capacity, free, last_seen, draining) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node.id, node.host, node.port, node.capacity, node.free, node.last_seen, node.draining),
        )

    async def forget_node(self, node_id: int) -> None:
        await self._write("DELETE FROM nodes WHERE id = ?", (node_id,))

    async def nodes(self) -> list[NodeRecord]:
        cursor = await self._db.execute(
            "SELECT id, host, port, capacity, free, last_seen, draining FROM nodes ORDER BY id"
        )
        return [
            NodeRecord(node_id, host, port, capacity, free, last_seen, bool(draining))
            for node_id, host, port, capacity, free, last_seen, draining in await cursor.fetchall()
        ]


# Ids per statement in bulk updates, below SQLite's default limit of 32,766 host parameters.
_BATCH = 10_000


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: there is no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points; incrementing the last code point that can be
    incremented, skipping the surrogates that UTF-8 cannot hold, gives the bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None

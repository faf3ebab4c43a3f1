"""dfsd migrate: copy all metadata from one database to another (SQLite to PostgreSQL, or back) while the cluster is
stopped, and verify the copy.

Like ``dfsd backup``, this works beside the managers, on their database, through the metadata store (the one module
that knows how). Every copied table (``MetadataStore.MIGRATED_TABLES``: files with their lost marks, nodes with their
drains, buckets, multipart uploads in progress with their parts) is read page by page in the order of its key and
written to the destination, and the file-id counter follows, so the copy never hands out an id again. Then the copy
is verified: the row counts of both sides, and a SHA-256 over every row of every table in that fixed order, read back
from the destination, must equal the source's; the source's digest is taken again at the end, so a manager still
writing to it is caught rather than copied half-way.

The destination must be empty (a new SQLite path, or a new PostgreSQL database): merging two clusters' names is
refused, never attempted.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from dfsd.client import run
from dfsd.manager.store import Location, MetadataStore, NoDatabase, Rows, StoreError, database_location

PROG = "dfsd migrate"

# Rows per read and per insert transaction: few round trips, and a statement's parameters (7 per row) stay far
# below SQLite's limit of 32,766.
PAGE = 1000

EXIT_USAGE = 64
EXIT_DESTINATION_NOT_EMPTY = 73  # EX_CANTCREAT
EXIT_SOURCE_CHANGED = 75  # EX_TEMPFAIL: stop the managers and run it again
EXIT_COPY_DIFFERS = 70  # EX_SOFTWARE


class MigrateError(Exception):
    """A migration refused or failed, with what to do about it."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dfsd migrate``, among the subcommands of ``dfsd``."""
    parser = commands.add_parser(
        "migrate",
        help="copy all metadata from one database to another (SQLite <-> PostgreSQL) while the cluster is stopped",
        description="Copy every file record (with lost marks), every node (with drains), every bucket, every multipart "
        "upload in progress (with its parts) and the file-id counter from "
        "SRC to the empty database DST, then verify the copy (row counts, and a SHA-256 over every row). "
        "Stop every manager first.",
        epilog="exit status:\n  0      copied and verified\n  64     wrong command line, or SRC and DST are one\n"
        "  66     SRC does not exist\n  69     a database cannot be opened\n  70     the copy differs from SRC\n"
        "  73     DST is not empty\n  75     SRC changed during the copy (a manager still runs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", type=database_location, metavar="SRC", help="a SQLite file, or postgresql://USER@HOST:PORT/DBNAME"
    )
    parser.add_argument("dest", type=database_location, metavar="DST", help="an empty database (created if need be)")
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    try:
        counts, digest = run(migrate(args.source, args.dest))
    except (StoreError, MigrateError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.exit_status
    rows = ", ".join(f"{count} {table}" for table, count in counts.items())
    print(f"migrated {args.source} to {args.dest}: {rows}; verified (sha256 {digest.hex()})")
    return 0


async def migrate(source: Location, dest: Location) -> tuple[dict[str, int], bytes]:
    """Copy ``source`` into the empty ``dest`` and verify it; returns the row counts and the digest of the copy."""
    if source == dest:
        raise MigrateError(f"SRC and DST are both {source}: name a new, empty database as DST", EXIT_USAGE)
    if isinstance(source, Path) and not source.exists():
        raise NoDatabase(f"no database at {source}: SRC is the --db the managers ran with")
    src = await MetadataStore.open(source)
    try:
        dst = await MetadataStore.open(dest)
        try:
            return await _copy(src, dst, dest)
        finally:
            await dst.close()
    finally:
        await src.close()


async def _copy(src: MetadataStore, dst: MetadataStore, dest: Location) -> tuple[dict[str, int], bytes]:
    held = {table: count for table, count in (await dst.row_counts()).items() if count}
    if held:
        rows = ", ".join(f"{count} {table}" for table, count in held.items())
        raise MigrateError(
            f"the destination {dest} is not empty (it holds {rows}): migrate into a new SQLite path or a new "
            "PostgreSQL database (`createdb NAME`); two clusters' metadata are never merged",
            EXIT_DESTINATION_NOT_EMPTY,
        )
    counts = await src.row_counts()
    hasher = hashlib.sha256()
    for table in src.MIGRATED_TABLES:
        async for page in _pages(src, table):
            _update(hasher, table, page)
            await dst.import_rows(table, page)
    await dst.set_next_file_id(max(await src.next_file_id(), await dst.next_file_id()))
    copied = hasher.digest()
    if await _digest(src) != copied or await src.row_counts() != counts:
        raise MigrateError(
            "the source changed during the copy (a manager still runs on it): stop every manager, then migrate "
            "again into a new, empty database",
            EXIT_SOURCE_CHANGED,
        )
    if await dst.row_counts() != counts or await _digest(dst) != copied:
        raise MigrateError(
            f"the copy in {dest} differs from the source (counts {await dst.row_counts()}, expected {counts}): "
            "do not use it; drop it and migrate again into a new, empty database",
            EXIT_COPY_DIFFERS,
        )
    return counts, copied


async def _pages(store: MetadataStore, table: str) -> AsyncIterator[Rows]:
    """Every row of ``table``, a page at a time, in the order of its key."""
    after: tuple[object, ...] | None = None
    while page := await store.export_rows(table, after, PAGE):
        yield page
        after = store.migrated_key(page[-1], table)


async def _digest(store: MetadataStore) -> bytes:
    """A SHA-256 over every copied row of ``store``, table by table in the order of their keys."""
    hasher = hashlib.sha256()
    for table in store.MIGRATED_TABLES:
        async for page in _pages(store, table):
            _update(hasher, table, page)
    return hasher.digest()


def _update(hasher: hashlib._Hash, table: str, rows: Rows) -> None:
    """Both engines give the same Python values for a row (int, float, str, bytes, None): their repr is canonical."""
    for row in rows:
        hasher.update(repr((table, row)).encode())

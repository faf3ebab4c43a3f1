"""dfsd backup: copy the manager's database to a file, safely even while the manager runs.

Unlike the other operator commands, this one works beside the manager rather than through it: it reads the database
the manager keeps, through the metadata store (the one module that knows how), never through a driver of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfsd.client import run
from dfsd.manager.store import Location, MetadataStore, StoreError, database_location

from .common import human_size

PROG = "dfsd backup"


def add_parser(commands: argparse._SubParsersAction, default_db: Path) -> None:
    """``dfsd backup``, among the subcommands of ``dfsd``; ``default_db`` is where ``dfsd manager`` keeps it."""
    parser = commands.add_parser(
        "backup", help="copy the manager's database to DEST safely, even while the manager runs (SQLite online backup)"
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="the file to write (replaced if it exists)")
    parser.add_argument("--db", type=database_location, default=default_db, help="the manager's database")
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return backup(args.db, args.dest)


def backup(db: Location, dest: Path) -> int:
    """The metadata store copies its database consistently, even while the manager writes to it."""
    try:
        size = run(MetadataStore.backup(db, dest))
    except StoreError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.exit_status
    print(f"backed up {db} to {dest} ({human_size(size)})")
    return 0

"""dfsd backup: copy the manager's database to a file, safely even while the manager runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from .common import EXIT_NO_INPUT, human_size

PROG = "dfsd backup"


def add_parser(commands: argparse._SubParsersAction, default_db: Path) -> None:
    """``dfsd backup``, among the subcommands of ``dfsd``; ``default_db`` is where ``dfsd manager`` keeps it."""
    parser = commands.add_parser(
        "backup", help="copy the manager's database to DEST safely, even while the manager runs (SQLite online backup)"
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="the file to write (replaced if it exists)")
    parser.add_argument("--db", type=Path, default=default_db, help="the manager's database")
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return backup(args.db, args.dest)


def backup(db: Path, dest: Path) -> int:
    """SQLite's online backup copies a consistent snapshot page by page while writers carry on."""
    if not db.exists():
        print(f"{PROG}: no database at {db}; give --db PATH", file=sys.stderr)
        return EXIT_NO_INPUT
    partial = dest.with_name(dest.name + ".partial")
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as source:
        with contextlib.closing(sqlite3.connect(partial)) as target:
            source.backup(target)
    os.replace(partial, dest)
    print(f"backed up {db} to {dest} ({human_size(dest.stat().st_size)})")
    return 0

"""The protocol package stays sans-I/O: no event loop, sockets, clock, files or database, and nothing else of dfsd.

Bytes in, messages out, and time passed in by the caller; that is what lets the codec be tested without an event loop
and fuzzed byte by byte. Likewise only the metadata store's backends import a database driver. This reads the source
(it does not import it), so an import hidden in a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).parent.parent / "protocol"
PACKAGE = "dfsd.protocol"

# I/O, the clock and the database. (subprocess, threading and uvloop are no better than asyncio here.)
FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "selectors",
    "sqlite3",
    "aiosqlite",
    "os",
    "subprocess",
    "threading",
    "uvloop",
}


def imported_modules(source: str, package: str = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module directly inside ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")
                # ``from . import x`` is inside the package; each extra dot climbs one package up.
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.append((node.lineno, base))
            # ``from dfsd import storage`` imports dfsd.storage, not just dfsd.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if base in ("dfsd", "")]
    return found


def violations(source: str) -> list[str]:
    bad = []
    for line, module in imported_modules(source):
        root = module.split(".")[0]
        if root in FORBIDDEN:
            bad.append(f"line {line}: imports {module} (I/O belongs outside the protocol package)")
        elif root == "dfsd" and module not in ("dfsd", PACKAGE) and not module.startswith(PACKAGE + "."):
            bad.append(f"line {line}: imports {module} (the protocol package depends on nothing else of dfsd)")
        elif module == "":
            bad.append(f"line {line}: a relative import climbs out of the protocol package")
    return bad


SOURCES = sorted(PROTOCOL_DIR.glob("**/*.py"))


def test_protocol_sources_are_found() -> None:
    assert {"framing.py", "messages.py", "errors.py", "limits.py"} <= {path.name for path in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PROTOCOL_DIR)))
def test_protocol_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os.path",
        "from os import path",
        "import time as clock",
        "def f():\n    import socket",
        "import selectors, json",
        "from sqlite3 import connect",
        "import aiosqlite",
        "from dfsd import wire",
        "from dfsd.manager import server",
        "import dfsd.storage.node",
        "from .. import wire",
        "from ..manager import server",
        "from ... import anything",
    ],
)
def test_checker_catches(source: str) -> None:
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import io, struct, cbor2",
        "from .errors import ProtocolError",
        "from . import limits",
        "from dfsd.protocol import messages",
        "from dfsd.protocol.limits import MAX_FRAME_SIZE",
        "import dfsd.protocol.framing",
        "from typing import Any",
        "import types",
    ],
)
def test_checker_allows(source: str) -> None:
    assert violations(source) == []


# Database drivers, and the only modules that may import them: the metadata store's backends. Everything else that
# touches the database (the manager, `dfsd backup`, the tools) goes through ``dfsd.manager.store.MetadataStore``.
DRIVERS = {"sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2"}
STORE_BACKENDS = {"dfsd/manager/store_sqlite.py", "dfsd/manager/store_postgres.py"}
ROOT = PROTOCOL_DIR.parent
SHIPPED = sorted(path for folder in ("dfsd", "tools", "protocol") for path in (ROOT / folder).glob("**/*.py"))


def driver_imports(source: str) -> list[str]:
    return [
        f"line {line}: imports {module} (only the metadata store's backends talk to a database)"
        for line, module in imported_modules(source)
        if module.split(".")[0] in DRIVERS
    ]


def test_store_backends_are_found() -> None:
    assert STORE_BACKENDS <= {str(path.relative_to(ROOT)) for path in SHIPPED}


@pytest.mark.parametrize(
    "path",
    [path for path in SHIPPED if str(path.relative_to(ROOT)) not in STORE_BACKENDS],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_only_the_metadata_store_imports_a_database_driver(path: Path) -> None:
    assert driver_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source", ["import sqlite3", "from asyncpg import Pool", "def f():\n    import aiosqlite"])
def test_driver_checker_catches(source: str) -> None:
    assert driver_imports(source) != []

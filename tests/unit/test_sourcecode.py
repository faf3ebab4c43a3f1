"""Import rules, checked on the source (it is read, not imported, so an import hidden in a function counts too).

- The protocol package stays sans-I/O: no event loop, sockets, clock, files or database, and nothing else of dfsd.
  Bytes in, messages out, and time passed in by the caller; that is what lets the codec be tested without an event loop
  and fuzzed byte by byte.
- The tools use only the client library's public surface (what ``dfsd.client.__all__`` names) and ``dfsd.processes``
  (starting daemons and waiting until they listen), so the library can change behind them and they show what any
  program can do with it.
- The manager and the storage node never import each other: they meet only on the wire.
- Only the metadata store's backends import a database driver.
- Whether a file's bytes go inline or as a stream is decided in one module of dfsd, ``dfsd/transfer.py``, for every
  hop: no other module of dfsd (or tool) names ``INLINE_MAX``.

And one rule about what is imported at all: this checkout, wherever Python starts (the suite, and the daemons it
starts from temporary directories), so an edit is tested without reinstalling.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_DIR = ROOT / "protocol"
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
            base = _absolute(node, package)
            found.append((node.lineno, base))
            # ``from dfsd import storage`` imports dfsd.storage, not just dfsd.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if base in ("dfsd", "")]
    return found


def imported_names(source: str, package: str, module: str) -> list[tuple[int, str]]:
    """(line, name) of every name taken from ``module`` by ``from ... import`` in ``source`` (inside ``package``)."""
    return [
        (node.lineno, alias.name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and _absolute(node, package) == module
        for alias in node.names
    ]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    # ``from . import x`` is inside the package; each extra dot climbs one package up.
    return ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))


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


# --- the tools: the client library's public surface only --------------------------------------------------------------

TOOLS_DIR = ROOT / "tools"
TOOLS = "dfsd.tools"
CLIENT = "dfsd.client"
# Besides the client library, the one helper the tools may use: starting daemons and waiting until they listen.
SHARED_HELPERS = {"dfsd.processes"}
# ``dfsd backup`` and ``dfsd migrate`` work on the manager's database beside it, not through it: they read and write
# it through the metadata store. dfs-bench starts its own managers and reports the read cache they run with.
TOOL_EXCEPTIONS = {
    "backup.py": {"dfsd.manager.store"},
    "migrate.py": {"dfsd.manager.store"},
    "bench_cluster.py": {"dfsd.manager.read_cache"},
}


def public_surface() -> set[str]:
    """The names ``dfsd.client.__all__`` lists, read from its source."""
    tree = ast.parse((ROOT / "dfsd" / "client.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("dfsd/client.py has no __all__")


def tool_violations(source: str, allowed: frozenset[str] | set[str] = frozenset()) -> list[str]:
    bad = []
    permitted = {"dfsd", CLIENT, *SHARED_HELPERS, *allowed}
    for line, module in imported_modules(source, TOOLS):
        inside_tools = module == TOOLS or module.startswith(TOOLS + ".")
        if module.split(".")[0] != "dfsd" or module in permitted or inside_tools:
            continue
        bad.append(f"line {line}: imports {module} (tools use the client library's public surface, dfsd.client)")
    public = public_surface()
    for line, name in imported_names(source, TOOLS, CLIENT):
        if name not in public:
            bad.append(f"line {line}: imports {name} from dfsd.client, which its __all__ does not name")
    return bad


TOOL_SOURCES = sorted(TOOLS_DIR.glob("**/*.py"))


def test_tool_sources_are_found() -> None:
    assert {"common.py", "push.py", "bench.py", "status.py"} <= {path.name for path in TOOL_SOURCES}


@pytest.mark.parametrize("path", TOOL_SOURCES, ids=lambda path: str(path.relative_to(TOOLS_DIR)))
def test_tool_uses_only_the_client_librarys_public_surface(path: Path) -> None:
    assert tool_violations(path.read_text(encoding="utf-8"), TOOL_EXCEPTIONS.get(path.name, set())) == []


@pytest.mark.parametrize(
    "source",
    [
        "from dfsd.wire import READ_SIZE",
        "from dfsd import aio",
        "import dfsd.settings",
        "from dfsd.protocol import DfsError",
        "from dfsd.protocol.messages import FileInfo",
        "from dfsd.client import Connection",  # imported inside dfsd.client, but not its public surface
        "from ..client import receive_stream",
        "from ..wire import Connection",
        "from ..manager import server",
    ],
)
def test_tool_checker_catches(source: str) -> None:
    assert tool_violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from dfsd.client import Client, DfsError, FileInfo, run",
        "from dfsd.client import run as run_async",
        "from dfsd import processes",
        "from .common import run",
        "from . import progress",
        "from ..client import Client",
        "import cbor2, sqlite3",
    ],
)
def test_tool_checker_allows(source: str) -> None:
    assert tool_violations(source) == []


# --- the manager and the storage node never import each other ---------------------------------------------------------

SEPARATE = {"dfsd.manager": "dfsd.storage", "dfsd.storage": "dfsd.manager"}


def cross_imports(source: str, package: str) -> list[str]:
    other = SEPARATE[package]
    return [
        f"line {line}: imports {module} ({package} and {other} meet only on the wire)"
        for line, module in imported_modules(source, package)
        if module == other or module.startswith(other + ".")
    ]


DAEMON_SOURCES = [
    (package, path) for package in SEPARATE for path in sorted(ROOT.joinpath(*package.split(".")).glob("*.py"))
]


@pytest.mark.parametrize(
    ("package", "path"), DAEMON_SOURCES, ids=[str(path.relative_to(ROOT)) for _, path in DAEMON_SOURCES]
)
def test_manager_and_storage_never_import_each_other(package: str, path: Path) -> None:
    assert cross_imports(path.read_text(encoding="utf-8"), package) == []


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("dfsd.manager", "from ..storage import layout"),
        ("dfsd.manager", "from .. import storage"),
        ("dfsd.manager", "import dfsd.storage.node"),
        ("dfsd.storage", "from dfsd.manager.store import MetadataStore"),
        ("dfsd.storage", "from ..manager.placement import choose_node"),
    ],
)
def test_cross_import_checker_catches(package: str, source: str) -> None:
    assert cross_imports(source, package) != []


def test_cross_import_checker_allows() -> None:
    assert cross_imports("from ..wire import Connection\nfrom .topology import Topology", "dfsd.manager") == []
    assert cross_imports("from .. import service\nfrom .layout import Layout", "dfsd.storage") == []


# --- one home for the inline-or-stream choice -------------------------------------------------------------------------

CHOOSER = ROOT / "dfsd" / "transfer.py"
OUTSIDE_PROTOCOL = sorted([*ROOT.joinpath("dfsd").glob("**/*.py"), *TOOL_SOURCES])


def names_inline_max(source: str) -> list[int]:
    """Lines of ``source`` that name INLINE_MAX: imported, read as a name or as an attribute."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "INLINE_MAX" for alias in node.names):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Name) and node.id == "INLINE_MAX") or (
            isinstance(node, ast.Attribute) and node.attr == "INLINE_MAX"
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", OUTSIDE_PROTOCOL, ids=lambda path: str(path.relative_to(ROOT)))
def test_only_transfer_chooses_between_inline_and_stream(path: Path) -> None:
    named = names_inline_max(path.read_text(encoding="utf-8"))
    assert bool(named) == (path == CHOOSER), f"INLINE_MAX on lines {named}: leave the choice to dfsd/transfer.py"


@pytest.mark.parametrize(
    "source",
    [
        "from ..protocol import INLINE_MAX",
        "from dfsd.protocol.limits import CHUNK_SIZE, INLINE_MAX as SMALL",
        "inline = length <= protocol.INLINE_MAX",
    ],
)
def test_inline_checker_catches(source: str) -> None:
    assert names_inline_max(source) != []


# --- the checkout is what runs ----------------------------------------------------------------------------------------

WHERE = "import dfsd, dfsd.protocol, dfsd.tools; print(dfsd.__file__, dfsd.protocol.__file__, dfsd.tools.__file__)"


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_the_checkout_is_what_is_imported(where: str, tmp_path: Path) -> None:
    """A copy installed without -e would be tested instead of the edits (and ``python -m pytest`` would find ``dfsd/``
    without its ``protocol`` and ``tools``); the fix is the README's ``pip install -e '.[test]'``."""
    cwd = ROOT if where == "here" else tmp_path
    found = subprocess.run([sys.executable, "-c", WHERE], cwd=cwd, capture_output=True, text=True, check=False)
    assert found.returncode == 0, f"{found.stderr}install the checkout with pip install -e '.[test]'"
    folders = [Path(path).resolve().parent for path in found.stdout.split()]
    assert folders == [ROOT / "dfsd", ROOT / "protocol", ROOT / "tools"], (
        "install the checkout with pip install -e '.[test]'"
    )


# --- what a tool loads to start ---------------------------------------------------------------------------------------

# Libraries a plain run of dfs-cat, dfs-push, dfs-ls or dfs-rm has no use for: the daemons' Prometheus client, tqdm
# (imported only to draw a progress bar, on a terminal), json (only for --json). dfs-bench times dfs-cat and dfs-push as
# processes, so their start-up counts in the figures: these took 35 ms of it.
NOT_AT_START = ("prometheus_client", "tqdm", "json", "dfsd.metrics")
LOADED = "import sys, {tool}; print(' '.join(name for name in {names!r} if name in sys.modules))"


@pytest.mark.parametrize("tool", ["dfsd.tools.cat", "dfsd.tools.push", "dfsd.tools.ls", "dfsd.tools.rm"])
def test_a_tool_starts_without_what_only_some_runs_need(tool: str) -> None:
    script = LOADED.format(tool=tool, names=NOT_AT_START)
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.split() == []


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


def test_the_sole_lease_is_sans_io() -> None:
    """``dfsd/manager/sole_lease.py`` decides from the lease row and the times its caller read: no clock, no I/O and no
    database of its own, so its rules are tested with numbers (``tests/unit/test_sole_lease_rules.py``)."""
    source = (ROOT / "dfsd" / "manager" / "sole_lease.py").read_text(encoding="utf-8")
    modules = [module for _, module in imported_modules(source, "dfsd.manager")]
    assert [module for module in modules if module.split(".")[0] in FORBIDDEN | DRIVERS] == []

"""The gateway's protocol package stays sans-I/O, like protocol/: no sockets, event loop, clock, files or database.

The S3 logic (signatures, aws-chunked, XML, names, listings) is bytes and values in, values out, with time passed in as
``now``, so it is tested and fuzzed without a server. The HTTP server that uses it lives in its ``server`` sub-package,
which does I/O and is not read here.
This reads the source (an import hidden in a function counts), with test_sourcecode.py's checker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sourcecode import FORBIDDEN, imported_modules

GATEWAY_DIR = Path(__file__).resolve().parents[2] / "dfsd" / "gateway"
PACKAGE = "dfsd.gateway"
# The clock's other doors: datetime.now() and friends are calls, not imports, so they are looked for by name.
CLOCK_CALLS = ("datetime.now", "datetime.utcnow", "date.today", ".now(", "time.time", "monotonic")


def violations(source: str) -> list[str]:
    bad = []
    for line, module in imported_modules(source, PACKAGE):
        root = module.split(".")[0]
        if root in FORBIDDEN:
            bad.append(f"line {line}: imports {module}")
        elif root == "dfsd" and not module.startswith(("dfsd.gateway", "dfsd.protocol")) and module != "dfsd":
            bad.append(f"line {line}: imports {module} (only dfsd.protocol is allowed)")
    bad += [f"calls {call}" for call in CLOCK_CALLS if call in source]
    return bad


SOURCES = sorted(GATEWAY_DIR.glob("*.py"))


def test_gateway_sources_are_found() -> None:
    assert {"sigv4.py", "chunked.py", "s3xml.py", "listing.py"} <= {path.name for path in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_gateway_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "from time import time",
        "import socket",
        "from dfsd import client",
        "from dfsd.manager import server",
        "x = datetime.now(UTC)",
        "import os",
    ],
)
def test_checker_catches(source: str) -> None:
    assert violations(source) != []

"""What every client tool shares (dfs-push, dfs-cat, dfs-rm, dfs-ls, dfs-bench, and the operator's commands of
``dfsd``): command lines that exit 64 when wrong, the --manager option, running the client, turning errors into exit
codes and messages that say what to do next, and the small helpers the listings share (sizes, times, tables, JSON).

Exit status: 0 on success; the dfsd error code (1-11, see PROTOCOL.md) when the cluster refused; 64 for a wrong
command line; 66 when a local input file cannot be read; 74 when local output cannot be written; 130 on Ctrl-C.
A tool working through several files (dfs-push a b c, dfs-rm a b c) tries every one and exits with the first error's
status.

Every error is one line, ``PROG: error N: message``, followed by one ``PROG: hint: ...`` line saying what to do next.
The hint is chosen by error code (never by message text), so it reads the same whichever server sent the error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from dfsd.client import Client, DfsError, ErrorCode
from dfsd.client import run as run_async

from .heap import keep_freed_memory

# 2 would mean "file does not exist" here (the cluster's error codes are the tools' exit statuses): EX_USAGE instead.
EXIT_USAGE = 64
EXIT_NO_INPUT = 66
EXIT_IO_ERROR = 74
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = """\
exit status:
  0      success
  1-11   the cluster's error code: 1 servers unavailable, 2 file does not exist, 3 file name already exists,
         4 file unavailable (its node is down), 5 bad request, 6 protocol error, 7 checksum mismatch,
         8 storage full, 9 not authorised, 10 internal error, 11 node id in use
  64     wrong command line
  66     a local input file cannot be read
  74     local output cannot be written
  130    interrupted (Ctrl-C)
  With several files, every file is tried and the status is the first error's.
  Every error is printed on standard error as "PROG: error N: message", then a "PROG: hint:" line on what to do.
"""

# What to do next, by error code. A message from the server may already say part of it; the hint is the tool's own.
HINTS: dict[int, str] = {
    ErrorCode.SERVERS_UNAVAILABLE: (
        "check that the manager runs (`dfsd manager`, or `dfsd cluster` for a local one) and that --manager or "
        "$DFS_MANAGER names it; `dfsd status` shows which storage nodes are up (start one with "
        "`dfsd storage --id N --manager HOST:PORT`)"
    ),
    ErrorCode.NOT_FOUND: "check the name with `dfs-ls PREFIX`; names are exact, case-sensitive keys",
    ErrorCode.NAME_EXISTS: "delete the old file with `dfs-rm NAME` first, or store this one under another name",
    ErrorCode.FILE_UNAVAILABLE: (
        "`dfsd status` shows the storage node that is down or lost the file; try again once it is back up"
    ),
    ErrorCode.BAD_REQUEST: (
        "a name is 1 to 1088 bytes of UTF-8 without NUL, and --offset/--length must lie inside the file "
        "(`dfs-ls -l NAME` shows its size)"
    ),
    ErrorCode.PROTOCOL_ERROR: "the client and the cluster may run different dfsd versions; upgrade the older one",
    ErrorCode.CHECKSUM_MISMATCH: "bytes were damaged on the way; try again; if it recurs, check the network and disks",
    ErrorCode.STORAGE_FULL: "free space with `dfs-rm`, or add a storage node; `dfsd status` shows free space per node",
    ErrorCode.NOT_AUTHORISED: "set $DFS_SECRET or $DFS_SECRET_FILE to the cluster's shared secret (ask its operator)",
    ErrorCode.INTERNAL: "the server's log (manager or storage node) says what failed; try again",
    ErrorCode.NODE_ID_IN_USE: "give this storage node an --id that no live node uses",
}


class UsageParser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64 (EX_USAGE), with a hint pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        print(f"{self.prog}: hint: `{self.prog} --help` lists the options and exit statuses", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class ArgumentParser(UsageParser):
    """The command line of a client tool: exit statuses in its --help, and --manager."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            epilog=EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,  # type: ignore[arg-type]
        )
        add_manager_option(self)


def add_manager_option(
    parser: argparse.ArgumentParser,
    help: str = "the manager, or several as HOST:PORT,HOST:PORT,... tried in turn "
    "(default: $DFS_MANAGER, else 127.0.0.1:8000)",
) -> None:
    """``--manager HOST:PORT[,HOST:PORT...]``, for every command that talks to a manager; unset, the client library
    falls back to $DFS_MANAGER, then 127.0.0.1:8000."""
    parser.add_argument("--manager", metavar="HOST:PORT[,...]", help=help)


class Failures:
    """The errors of one command: each printed as it happens, with its hint the first time its status comes up, and
    the first one's exit status kept (a command working through several files goes on after a failure)."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.count = 0
        self.status = 0
        self._hinted: set[int] = set()

    def add(self, status: int, message: str, hint: str | None, subject: str | None = None) -> int:
        """Print ``prog: [subject: ]message`` and, once per status, ``prog: hint: ...``; return ``status``."""
        say(f"{self.prog}: {subject}: {message}" if subject else f"{self.prog}: {message}")
        if hint and status not in self._hinted:
            say(f"{self.prog}: hint: {hint}")
        self._hinted.add(status)
        self.count += 1
        self.status = self.status or status
        return status

    def error(self, err: DfsError, subject: str | None = None) -> int:
        """A refusal from the cluster: ``error N: message`` and the hint for N."""
        return self.add(int(err.code), err.describe(), HINTS.get(int(err.code)), subject)


def say(line: str) -> None:
    """One line on standard error, drawn above a progress bar if one is showing (tqdm.write knows about it). tqdm is
    imported only to draw a bar (``progress``), so while it is not, no bar can be showing and a plain print does."""
    drawing = sys.modules.get("tqdm")
    if drawing is None:
        print(line, file=sys.stderr)
    else:
        drawing.tqdm.write(line, file=sys.stderr)


def run(prog: str, manager: str | None, work: Callable[[Client], Awaitable[int | None]]) -> int:
    """Run ``work`` with a connected client; print any error as ``prog: error N: message``, and each request asked
    again of another manager as one ``prog: ...`` line; return the exit status."""

    keep_freed_memory()

    async def main() -> int | None:
        async with Client(manager, on_retry=lambda reason: say(f"{prog}: {reason}")) as client:
            return await work(client)

    try:
        return run_async(main()) or 0
    except DfsError as err:
        return Failures(prog).error(err)
    except ValueError as err:  # a malformed --manager or $DFS_* setting
        return bad_setting(prog, err)
    except BrokenPipeError:
        return EXIT_IO_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def bad_setting(prog: str, err: ValueError) -> int:
    """A setting that cannot be used (a malformed --manager or $DFS_MANAGER, an empty secret file): the error and a
    hint, one line each, and the usage status. The daemons of ``dfsd`` say it the same way as the tools."""
    print(f"{prog}: {err}", file=sys.stderr)
    print(f"{prog}: hint: fix the setting it names; --manager and $DFS_MANAGER take HOST:PORT", file=sys.stderr)
    return EXIT_USAGE


# --- listings ---------------------------------------------------------------------------------------------------------


def human_size(size: int) -> str:
    """``size`` bytes for a person: "23 B", "1.5 KiB", "256.0 MiB" (binary units, one decimal)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_size(text: str | int, minimum: int = 1) -> int:
    """A byte count: ``1073741824``, ``1G``, ``64M``, ``512K`` (binary multiples; an optional ``iB``/``B`` suffix), at
    least ``minimum``; ValueError saying what is wrong."""
    value = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    scale = 1
    if value and value[-1] in "KMG":
        scale = 1024 ** ("KMG".index(value[-1]) + 1)
        value = value[:-1]
    try:
        size = int(float(value) * scale)
    except (ValueError, OverflowError):  # not a number; infinity
        raise ValueError(f"{text!r} is not a size (e.g. 1G, 64M, 4096)") from None
    if size < minimum:
        raise ValueError(f"{text!r}: a size must be at least {minimum} byte{'' if minimum == 1 else 's'}")
    return size


def size(text: str | int) -> int:
    """A byte count that may be 0 (``parse_size``), for argparse, whose message names this function: "invalid size
    value"."""
    return parse_size(text, minimum=0)


def human_time(when: float, now: float | None = None) -> str:
    """A local time, with the date only when it is not today."""
    local = time.localtime(when)
    today = time.localtime(time.time() if now is None else now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def printable(name: str) -> str:
    """A file name safe to show on a terminal: names holding control characters (a newline, an escape sequence)
    are shown quoted with Python escapes, so they cannot break a table or drive the terminal."""
    return name if name.isprintable() else repr(name)


def format_row(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    """One table row: each cell padded to its width (right-aligned where ``right`` says), the last one unpadded."""
    padded = [
        cell.rjust(width) if r else cell.ljust(width) for cell, width, r in zip(cells, widths, right, strict=True)
    ]
    if not right[-1]:
        padded[-1] = cells[-1]  # a name may be longer than any width: nothing follows it anyway
    return "  ".join(padded)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Header and rows, every column as wide as its widest cell, two spaces between columns."""
    body = [list(row) for row in rows]
    widths = [max([len(headers[i])] + [len(row[i]) for row in body]) for i in range(len(headers))]
    return [format_row(headers, widths, right)] + [format_row(row, widths, right) for row in body]


def dump_json(value: Any, indent: int | None = None) -> str:
    """``value`` (dataclasses, lists, dicts) as JSON, with bytes as lowercase hex (a SHA-256 reads as it does in
    ``sha256sum``) and non-ASCII characters escaped, so any locale can print it."""
    import json  # here, not at the top: only --json needs it, and every tool's start-up would pay for it

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=_hex, indent=indent)


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

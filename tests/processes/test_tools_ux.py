"""What a person (or a script) sees from the tools: progress bars on a terminal only, many files in one dfs-push,
aligned tables and JSON from dfs-ls and dfsd status, exit statuses in --help, and a hint after every error.

Progress is checked the way a user meets it: the tool runs as its own process with standard error on a pseudo-terminal
(the slave side of ``pty.openpty``), and the test reads what a terminal would show from the master side. The same
command with standard error on a pipe must print nothing but its usual lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import LocalCluster, run_tool

BAR_SIZE = 3 * 1024 * 1024 + 5  # a few chunks, and not a round number


@dataclass
class TerminalRun:
    returncode: int
    stdout: bytes
    terminal: str  # what the pseudo-terminal on standard error received


def run_on_terminal(
    tool: str, *args: str, manager: str, stdout_on_terminal: bool = False, size: tuple[int, int] = (100, 24)
) -> TerminalRun:
    """Run an installed tool with standard error (and optionally standard output) on a pseudo-terminal of ``size``
    (columns, rows)."""
    master, slave = pty.openpty()
    columns, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / tool), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_on_terminal else subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "DFS_MANAGER": manager},
    )
    os.close(slave)
    stdout: list[bytes] = []
    # Standard output drains in a thread: a big download must not block on a full pipe while we read the terminal.
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read() if process.stdout else b""))
    reader.start()
    received = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every copy of the slave side is closed, the process has exited
                break
            if not data:
                break
            received.append(data)
    finally:
        os.close(master)
        reader.join(60)
        process.wait(60)
    return TerminalRun(process.returncode, stdout[0] if stdout else b"", b"".join(received).decode(errors="replace"))


def assert_progress_bar(terminal: str, total: str) -> None:
    """tqdm's byte bar: a percentage, bytes done of the total, and a rate; redrawn in place with carriage returns."""
    assert "\r" in terminal, terminal
    assert "100%" in terminal, terminal
    assert f"{total}/{total}" in terminal, terminal
    assert "B/s" in terminal, terminal


def test_push_draws_progress_on_a_terminal_and_nothing_on_a_pipe(cluster: LocalCluster, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(BAR_SIZE))

    shown = run_on_terminal("dfs-push", str(source), manager=cluster.address)
    assert shown.returncode == 0, shown.terminal
    assert_progress_bar(shown.terminal, "3.00M")
    assert "stored big.bin (3145733 bytes" in shown.terminal
    assert shown.stdout == b""

    piped = run_tool("dfs-push", str(source), "--name", "again.bin", manager=cluster.address)
    assert piped.returncode == 0
    assert piped.stdout == b""
    assert piped.stderr.decode().splitlines() == [f"stored again.bin ({BAR_SIZE} bytes, sha256 {sha256(source)})"]

    quiet = run_on_terminal("dfs-push", "-q", str(source), "--name", "quiet.bin", manager=cluster.address)
    assert (quiet.returncode, quiet.terminal) == (0, "")
    assert run_tool("dfs-cat", "quiet.bin", manager=cluster.address).stdout == source.read_bytes()


def test_cat_draws_progress_on_a_terminal_and_nothing_on_a_pipe(cluster: LocalCluster, tmp_path: Path) -> None:
    payload = os.urandom(BAR_SIZE)
    assert run_tool("dfs-push", "-", "--name", "big", manager=cluster.address, stdin=payload).returncode == 0

    shown = run_on_terminal("dfs-cat", "big", manager=cluster.address)
    assert shown.returncode == 0, shown.terminal
    assert shown.stdout == payload  # the bar goes to standard error only
    assert_progress_bar(shown.terminal, "3.00M")

    to_file = run_on_terminal("dfs-cat", "big", "-o", str(tmp_path / "copy"), manager=cluster.address)
    assert to_file.returncode == 0
    assert_progress_bar(to_file.terminal, "3.00M")
    assert (tmp_path / "copy").read_bytes() == payload

    ranged = run_on_terminal("dfs-cat", "big", "--offset", "5", "--length", "1048576", manager=cluster.address)
    assert ranged.stdout == payload[5 : 5 + 1048576]
    assert_progress_bar(ranged.terminal, "1.00M")

    piped = run_tool("dfs-cat", "big", manager=cluster.address)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, payload, b"")

    quiet = run_on_terminal("dfs-cat", "-q", "big", manager=cluster.address)
    assert (quiet.returncode, quiet.stdout, quiet.terminal) == (0, payload, "")


def test_progress_bar_vanished_on_a_terminal_reporting_0_columns_repro(cluster: LocalCluster, tmp_path: Path) -> None:
    """A pseudo-terminal under `script`, or some CI runners, report a size of 0x0; tqdm drew nothing there."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(BAR_SIZE))
    shown = run_on_terminal("dfs-push", str(source), manager=cluster.address, size=(0, 0))
    assert shown.returncode == 0, shown.terminal
    assert_progress_bar(shown.terminal, "3.00M")
    bars = [line for line in shown.terminal.replace("\n", "\r").split("\r") if "%|" in line]
    assert bars and all(len(line) == 80 for line in bars), bars  # as wide as a classic terminal


def test_cat_draws_no_bar_over_bytes_going_to_the_terminal(cluster: LocalCluster) -> None:
    assert run_tool("dfs-push", "-", "--name", "hello", manager=cluster.address, stdin=b"hello\n").returncode == 0
    shown = run_on_terminal("dfs-cat", "hello", manager=cluster.address, stdout_on_terminal=True)
    assert shown.returncode == 0
    assert shown.terminal == "hello\r\n"  # the terminal's line discipline turns \n into \r\n


def test_push_many_files_and_a_directory(cluster: LocalCluster, tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    (tree / "2026" / "march").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top")
    (tree / "2026" / "a b.jpg").write_bytes(b"spaces")
    (tree / "2026" / "march" / "c.jpg").write_bytes(b"deep file")
    (tree / "empty").mkdir()

    pushed = run_tool("dfs-push", "-r", str(tree), manager=cluster.address)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stderr.decode().splitlines() == ["pushed 3 files (18 bytes), 0 failed"]
    names = run_tool("dfs-ls", manager=cluster.address).stdout.decode().splitlines()
    assert names == ["2026/a b.jpg", "2026/march/c.jpg", "top.txt"]  # relative to the directory, with "/"
    assert run_tool("dfs-cat", "2026/march/c.jpg", manager=cluster.address).stdout == b"deep file"

    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_bytes(b"1")
    two.write_bytes(b"22")
    several = run_tool("dfs-push", str(one), str(two), manager=cluster.address)
    assert several.returncode == 0, several.stderr
    assert several.stderr.decode().splitlines() == ["pushed 2 files (3 bytes), 0 failed"]
    assert run_tool("dfs-cat", "two.txt", manager=cluster.address).stdout == b"22"

    # several files on a terminal: one bar for the whole run, counting every file's bytes
    big = tmp_path / "many"
    big.mkdir()
    for index in range(3):
        (big / f"part{index}").write_bytes(os.urandom(1024 * 1024))
    shown = run_on_terminal("dfs-push", "-r", str(big), manager=cluster.address)
    assert shown.returncode == 0, shown.terminal
    assert_progress_bar(shown.terminal, "3.00M")
    assert "pushed 3 files (3145728 bytes), 0 failed" in shown.terminal


def test_push_tries_every_file_and_exits_with_the_first_error(cluster: LocalCluster, tmp_path: Path) -> None:
    taken, fine, missing = tmp_path / "taken.txt", tmp_path / "fine.txt", tmp_path / "missing.txt"
    taken.write_bytes(b"new")
    fine.write_bytes(b"fine")
    assert run_tool("dfs-push", "-", "--name", "taken.txt", manager=cluster.address, stdin=b"old").returncode == 0

    result = run_tool("dfs-push", str(taken), str(missing), str(fine), manager=cluster.address)
    assert result.returncode == 3  # the first failure's status; the later 66 does not replace it
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith(f"dfs-push: {taken}: error 3: file name already exists")
    assert lines[1].startswith("dfs-push: hint: ")
    assert lines[2] == f"dfs-push: cannot read {missing}: No such file or directory"
    assert lines[3].startswith("dfs-push: hint: ")
    assert lines[4:] == ["pushed 1 file (4 bytes), 2 failed"]
    assert run_tool("dfs-cat", "fine.txt", manager=cluster.address).stdout == b"fine"
    assert run_tool("dfs-cat", "taken.txt", manager=cluster.address).stdout == b"old"

    quiet = run_tool("dfs-push", "-q", str(taken), str(fine), manager=cluster.address)
    assert quiet.returncode == 3
    assert "pushed" not in quiet.stderr.decode()  # -q leaves only the errors
    assert "error 3" in quiet.stderr.decode()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["A", "B", "--name", "x"], "--name names a single file"),
        (["DIR"], "is a directory; give -r"),
        (["-r", "DIR", "--name", "x"], "--name names a single file"),
        (["A", "-"], "standard input (-) is pushed alone"),
        (["A", "DIR/A", "-r"], "would both be stored as A"),
    ],
)
def test_push_refuses_a_wrong_command_line_before_sending_anything(
    cluster: LocalCluster, tmp_path: Path, args: list[str], complaint: str
) -> None:
    (tmp_path / "DIR").mkdir()
    (tmp_path / "A").write_bytes(b"a")
    (tmp_path / "B").write_bytes(b"b")
    (tmp_path / "DIR" / "A").write_bytes(b"another a")
    result = run_tool("dfs-push", *args, manager=cluster.address, cwd=tmp_path)
    message = result.stderr.decode()
    assert result.returncode == 64, message
    assert complaint in message
    assert "dfs-push: hint: `dfs-push --help`" in message
    assert run_tool("dfs-ls", manager=cluster.address).stdout == b""


def test_ls_long_is_an_aligned_table_and_json_is_exact(cluster: LocalCluster) -> None:
    for name, data in (("small", b"x" * 23), ("two\nlines", b"nl"), ("big", b"y" * 5000)):
        assert run_tool("dfs-push", "-", "--name", name, manager=cluster.address, stdin=data).returncode == 0

    table = run_tool("dfs-ls", "-l", manager=cluster.address).stdout.decode().splitlines()
    assert len(table) == 4  # a header and one row per file: the newline in a name does not start a row
    header, *rows = table
    assert header.split() == ["SIZE", "STORED", "ON", "UPLOADED", "AVAILABLE", "NAME"]
    for column in ("STORED ON", "UPLOADED", "AVAILABLE", "NAME"):
        start = header.index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows), (column, table)
    size_end = header.index("SIZE") + len("SIZE")
    assert [row[:size_end].strip() for row in rows] == ["4.9 KiB", "23 B", "2 B"]  # right-aligned sizes
    assert rows[2].endswith("'two\\nlines'")  # escaped, so the table stays one line per file

    listed = json.loads(run_tool("dfs-ls", "--json", manager=cluster.address).stdout)
    assert [entry["name"] for entry in listed] == ["big", "small", "two\nlines"]
    small = listed[1]
    assert set(small) == {"name", "size", "sha256", "node", "created", "available", "meta"}
    assert small["meta"] is None  # FileInfo.meta: what the put carried (none here)
    assert small["size"] == 23 and small["available"] is True and small["node"] in cluster.nodes
    assert small["sha256"] == hashlib.sha256(b"x" * 23).hexdigest()
    assert json.loads(run_tool("dfs-ls", "--json", "nothing-here", manager=cluster.address).stdout) == []


def test_status_is_an_aligned_table_and_json_mirrors_cluster_status(cluster: LocalCluster) -> None:
    assert run_tool("dfs-push", "-", "--name", "f", manager=cluster.address, stdin=b"12345").returncode == 0

    lines = run_tool("dfsd", "status", manager=cluster.address).stdout.decode().splitlines()
    header, rows = lines[0], lines[1:4]
    assert header.split()[:5] == ["NODE", "ADDRESS", "STATE", "FILES", "USED"]
    for column in ("ADDRESS", "STATE", "LAST SEEN"):
        start = header.index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows), (column, lines)
    for column in ("FILES", "USED", "FREE", "ORPHANS"):  # numbers end where their header ends
        end = header.index(column) + len(column)
        assert all(row[end - 1] != " " and row[end : end + 2] == "  " for row in rows), (column, lines)
    assert lines[4] == "total: 3 of 3 nodes up, 1 files, 5 B"

    status = json.loads(run_tool("dfsd", "status", "--json", manager=cluster.address).stdout)
    assert set(status) == {"managers", "nodes", "files", "bytes", "lost", "rebalance"}
    assert status["managers"] == [
        {"address": cluster.address, "up": True, "coordinator": True, "database": str(cluster.root / "manager.db")}
    ]
    assert (status["files"], status["bytes"], status["lost"]) == (1, 5, [])
    assert sorted(node["id"] for node in status["nodes"]) == [100, 101, 102]
    node = status["nodes"][0]
    assert {"id", "host", "port", "up", "files", "used", "free", "capacity", "last_seen", "lost", "orphans"} <= set(
        node
    )
    assert set(status["rebalance"]) == {"running", "moved", "failed", "remaining", "auto"}


def test_every_error_says_what_to_do_next(cluster: LocalCluster, tmp_path: Path) -> None:
    cases = [
        (run_tool("dfs-cat", "nope", manager=cluster.address), 2, "dfs-ls"),
        (run_tool("dfs-rm", "nope", manager=cluster.address), 2, "dfs-ls"),
        (run_tool("dfs-cat", "nope", "-o", str(tmp_path / "no" / "dir"), manager=cluster.address), 74, "-o"),
        (run_tool("dfs-push", str(tmp_path / "absent"), manager=cluster.address), 66, "readable"),
        (run_tool("dfs-push", "-", "--name", "", manager=cluster.address, stdin=b"x"), 64, "--help"),
        (run_tool("dfs-ls", "--manager", "nonsense", manager=cluster.address), 64, "HOST:PORT"),
        (run_tool("dfs-cat", "--bogus", manager=cluster.address), 64, "--help"),
    ]
    assert run_tool("dfs-push", "-", "--name", "here", manager=cluster.address, stdin=b"abc").returncode == 0
    cases += [
        (run_tool("dfs-push", "-", "--name", "here", manager=cluster.address, stdin=b"x"), 3, "dfs-rm"),
        (run_tool("dfs-cat", "here", "--offset", "9", manager=cluster.address), 5, "dfs-ls -l"),
    ]
    for result, status, advice in cases:
        message = result.stderr.decode()
        assert result.returncode == status, message
        hints = [line for line in message.splitlines() if ": hint: " in line]
        assert len(hints) == 1 and advice in hints[0], message


def test_rm_tries_every_name(cluster: LocalCluster) -> None:
    for name in ("a", "b"):
        assert run_tool("dfs-push", "-", "--name", name, manager=cluster.address, stdin=b"x").returncode == 0
    result = run_tool("dfs-rm", "a", "nope", "b", manager=cluster.address)
    assert result.returncode == 2
    assert "dfs-rm: nope: error 2:" in result.stderr.decode()
    assert run_tool("dfs-ls", manager=cluster.address).stdout == b""


@pytest.mark.parametrize("tool", ["dfs-push", "dfs-cat", "dfs-ls", "dfs-rm"])
def test_help_documents_the_exit_statuses(tool: str) -> None:
    text = run_tool(tool, "--help", manager="127.0.0.1:1").stdout.decode()
    assert "exit status:" in text
    for status in ("0", "1-11", "64", "66", "74", "130"):
        assert f"\n  {status} " in text, (status, text)
    if tool in ("dfs-push", "dfs-cat"):
        assert "-q, --quiet" in text


@pytest.mark.parametrize("command", [["status"], ["rebalance"], ["scrub"], ["drain", "101"]])
def test_dfsd_status_with_a_bogus_manager_printed_a_traceback_repro(command: list[str]) -> None:
    """The operator's commands failed on a malformed --manager with a Python traceback, where dfs-ls gave an error and
    a hint; they now share the tools' error handling."""
    result = run_tool("dfsd", *command, "--manager", "bogus", manager="127.0.0.1:1")
    message = result.stderr.decode()
    assert result.returncode == 64, message
    assert "Traceback" not in message
    prog = f"dfsd {command[0]}"
    assert message.splitlines() == [
        f"{prog}: manager address 'bogus' is not HOST:PORT",
        f"{prog}: hint: fix the setting it names; --manager and $DFS_MANAGER take HOST:PORT",
    ]


@pytest.mark.parametrize("daemon", [["storage", "--id", "7"], ["gateway", "--port", "0", "--anonymous"]])
@pytest.mark.parametrize(
    ("manager", "complaint"),
    [
        ("bogus", "manager address 'bogus' is not HOST:PORT"),
        ("127.0.0.1:0", "manager address '127.0.0.1:0' is not HOST:PORT"),
        ("127.0.0.1:70000", "manager address '127.0.0.1:70000' is not HOST:PORT"),
        ("127.0.0.1:8000,", "manager list '127.0.0.1:8000,' has an empty entry"),
    ],
)
def test_daemon_with_a_bogus_manager_printed_a_traceback_repro(
    daemon: list[str], manager: str, complaint: str, tmp_path: Path
) -> None:
    """``dfsd storage`` and ``dfsd gateway`` died on a malformed --manager (or $DFS_MANAGER) with a Python traceback;
    they now say what is wrong in one line, with the tools' hint, and exit 64 before starting anything."""
    prog = f"dfsd {daemon[0]}"
    for result in (
        run_tool("dfsd", *daemon, "--manager", manager, manager="127.0.0.1:1", cwd=tmp_path),
        run_tool("dfsd", *daemon, manager=manager, cwd=tmp_path),  # the same value from $DFS_MANAGER
    ):
        message = result.stderr.decode()
        assert result.returncode == 64, message
        assert message.splitlines() == [
            f"{prog}: {complaint}" + (": give HOST:PORT, or HOST:PORT,HOST:PORT,..." if "list" in complaint else ""),
            f"{prog}: hint: fix the setting it names; --manager and $DFS_MANAGER take HOST:PORT",
        ]


@pytest.mark.parametrize(
    "command",
    [
        ["dfsd", "manager", "--port", "0"],
        ["dfsd", "storage", "--id", "7"],
        ["dfsd", "gateway", "--anonymous"],
        ["dfs-ls"],
    ],
)
def test_missing_secret_file_printed_a_traceback_repro(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --secret-file (or $DFS_SECRET_FILE) that does not exist killed the daemons with a Python traceback; every
    program now names the file and why it cannot be read, with the hint, and exits 64 before starting anything."""
    missing = tmp_path / "no-such-secret"
    prog = " ".join(command[:2]) if command[0] == "dfsd" else command[0]
    results = []
    if command[0] == "dfsd":  # the tools take the secret from the environment only
        results.append(run_tool(*command, "--secret-file", str(missing), manager="127.0.0.1:1", cwd=tmp_path))
    monkeypatch.setenv("DFS_SECRET_FILE", str(missing))
    results.append(run_tool(*command, manager="127.0.0.1:1", cwd=tmp_path))
    for result in results:
        message = result.stderr.decode()
        assert result.returncode == 64, message
        complaint = f"{prog}: cannot read the secret file {missing} (No such file or directory): give a file this "
        assert complaint + "user can read" in message.splitlines(), message  # the gateway logs its users first
        assert "Traceback" not in message


def test_status_help_documents_its_exit_statuses() -> None:
    text = run_tool("dfsd", "status", "--help", manager="127.0.0.1:1").stdout.decode()
    assert "exit status:" in text and "--json" in text


def sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()

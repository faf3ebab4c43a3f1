"""dfs-bench: one quick run as a user starts it, for correctness only — every figure present with both numbers and
their ratio, the bytes checked (a mismatch fails the run), nothing left behind. No speed is ever asserted: it depends on
the machine. The helpers the figures rest on are tested directly."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.protocol import ChecksumMismatch, ProtocolError
from dfsd.tools.bench import chosen_phases, main, parse_size
from dfsd.tools.bench_large import BLOCK, Pattern
from dfsd.tools.bench_measure import Timings
from dfsd.tools.bench_report import comparison, comparison_table, table
from dfsd.tools.throwaway_postgres import unreachable_ancestor
from postgres import PostgresServer

PHASES = ("write", "read", "delete")
LIBRARY, COMMANDS = ("large.upload", "large.download"), ("large.push", "large.cat")
EXPECTED_KEYS = {
    *LIBRARY,
    *COMMANDS,
    *(f"{key}.{role}_peak_memory" for key in LIBRARY for role in ("manager", "node")),
    *(f"{key}.{role}_peak_memory" for key in COMMANDS for role in ("manager", "node", "client")),
    *(
        f"small.{tag}.{phase}.{what}"
        for tag in ("1KiB", "64KiB")
        for phase in PHASES
        for what in ("rate", "p50", "p99")
    ),
    *(f"small.{tag}.write.disk" for tag in ("1KiB", "64KiB")),
    "large.cat.hashing_baseline",  # dfs-cat -o beside a baseline that hashes what it receives too
    "large.push.hashing_baseline",  # dfs-push beside a baseline whose two ends hash the bytes too
    "gateway.large.upload",
    "gateway.large.download",
    "gateway.large.upload.vs_command",
    "gateway.large.download.vs_command",
    "gateway.large.upload.peak_memory",
    "gateway.large.download.peak_memory",
    "gateway.small.4KiB.write.rate",
    "gateway.small.4KiB.read.rate",
}


COMPARED = {f"small.1KiB.{phase}.{what}" for phase in PHASES for what in ("rate", "p50", "p99")}
# The smallest run that still has every row: a few files, a few clients, a large file of one block.
TINY = ("-n", "8", "--clients", "4", "--large-size", "64K")


def processes_started_in(directory: Path) -> list[str]:
    """The command lines of running processes whose working directory is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(directory)):
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass  # gone meanwhile, or not ours to look at
    return found


def test_quick_run_reports_every_figure_compares_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # An earlier report to compare with: one figure in common, one this run does not have.
    old = {
        "machine": {"date": "2026-01-01T00:00:00+00:00"},
        "figures": {
            "large.push": {"label": "dfs-push", "unit": "MB/s", "dfsd": 100.0, "baseline": 400.0, "ratio": 0.25},
            "large.gone": {"label": "gone", "unit": "MB/s", "dfsd": 1.0, "baseline": 1.0, "ratio": 1.0},
        },
    }
    old_path = tmp_path.parent / f"{tmp_path.name}-old.json"
    old_path.write_text(json.dumps(old))
    command = Path(sys.executable).parent / "dfs-bench"
    result = subprocess.run(
        [str(command), "--quick", "--json", "--dir", str(tmp_path), "--compare", str(old_path)],
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)

    assert report["settings"] == {
        "large_size": 64 * 1024**2,
        "files": 500,
        "clients": 16,
        "sizes": [1024, 65536],
        "read_cache": 32 * 1024**2,  # the manager's default, which the private cluster's manager ran with
    }
    assert report["machine"]["cpus"] >= 1 and report["machine"]["python"] and report["machine"]["date"]
    assert report["cluster"].startswith("private")
    figures = report["figures"]
    assert set(figures) == EXPECTED_KEYS
    for key, figure in figures.items():
        assert figure["dfsd"] > 0 and figure["baseline"] > 0, key
        assert figure["ratio"] == pytest.approx(figure["dfsd"] / figure["baseline"], rel=0.01, abs=0.001), key
        assert figure["unit"] in ("MB/s", "MiB", "req/s", "ms"), key
    assert figures["small.1KiB.read.p50"]["dfsd"] <= figures["small.1KiB.read.p99"]["dfsd"]

    # The commands were timed as processes, and the baseline's client beside each: every one's memory was measured.
    for key in COMMANDS:
        assert figures[f"{key}.client_peak_memory"]["dfsd"] > 0, key

    # The comparison holds exactly the figure present in both reports, before and after.
    compared = report["comparison"]["figures"]
    assert set(compared) == {"large.push"}
    push = compared["large.push"]
    assert (push["old"], push["new"], push["old_ratio"]) == (100.0, figures["large.push"]["dfsd"], 0.25)
    assert push["change"] == pytest.approx(push["new"] / 100.0 - 1, rel=0.01, abs=0.001)

    # The table shows the same figures, one row each.
    lines = table(report)
    for figure in figures.values():
        assert sum(line.startswith(figure["label"] + "  ") for line in lines) == 1, figure["label"]
    assert "manager read cache: 32.0 MiB (--read-cache 33554432)" in lines

    # The temporary directory is gone, and so is every process started in it (daemons and baseline servers alike).
    assert list(tmp_path.iterdir()) == []
    assert processes_started_in(tmp_path) == []


def test_phases_large_reports_the_large_file_figures_alone(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "dfs-bench"
    result = subprocess.run(
        [str(command), "--phases", "large", "--large-size", "8M", "--json", "--dir", str(tmp_path)],
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    figures = json.loads(result.stdout)["figures"]
    assert set(figures) == {key for key in EXPECTED_KEYS if key.startswith("large.")}
    assert list(tmp_path.iterdir()) == []


def test_sizes() -> None:
    assert [parse_size(text) for text in ("4096", "1G", "64M", "512k", "1GiB", "1.5K")] == [
        4096,
        1024**3,
        64 * 1024**2,
        512 * 1024,
        1024**3,
        1536,
    ]
    for bad in ("", "G", "12X", "0", "-1M", "inf"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_percentiles_are_nearest_rank() -> None:
    timings = Timings(1.0, [float(n) for n in range(100, 0, -1)])  # 1 .. 100, in any order
    assert (timings.percentile(0.5), timings.percentile(0.99), timings.percentile(1.0)) == (50.0, 99.0, 100.0)
    assert timings.rate == 100.0
    assert Timings(1.0, [7.0]).percentile(0.99) == 7.0


def collect(pattern: Pattern, size: int) -> bytes:
    async def gather() -> bytes:
        return b"".join([chunk async for chunk in pattern.chunks(size)])

    return asyncio.run(gather())


def test_pattern_check_accepts_its_bytes_in_any_pieces_and_finds_any_damage() -> None:
    pattern = Pattern()
    size = 2 * BLOCK + 12345
    data = collect(pattern, size)
    assert len(data) == size

    check = pattern.checker(size, "test")
    for start in range(0, size, 300_007):  # pieces that straddle the block boundaries
        check.feed(memoryview(data)[start : start + 300_007])
    check.finish()

    swapped = data[BLOCK : 2 * BLOCK] + data[:BLOCK] + data[2 * BLOCK :]  # two whole blocks out of order
    flipped = data[:-1] + bytes([data[-1] ^ 1])
    for damaged in (swapped, flipped):
        with pytest.raises(ChecksumMismatch):
            pattern.checker(size, "test").feed(damaged)

    short = pattern.checker(size, "test")
    short.feed(data[:-1])
    with pytest.raises(ProtocolError):
        short.finish()
    with pytest.raises(ProtocolError):
        pattern.checker(size - 1, "test").feed(data)


def test_comparison_keeps_figures_in_both_reports_in_the_new_order() -> None:
    def report(**values: float | None) -> dict[str, object]:
        return {
            "figures": {
                key: {"label": key, "unit": "req/s", "dfsd": value, "baseline": 10.0, "ratio": None, "better": "higher"}
                for key, value in values.items()
            }
        }

    compared = comparison(report(a=10.0, b=20.0, c=0.0, gone=1.0), report(b=30.0, a=5.0, c=1.0, new=2.0))
    assert list(compared) == ["b", "a", "c"]
    assert (compared["a"]["change"], compared["b"]["change"], compared["c"]["change"]) == (-0.5, 0.5, None)
    lines = comparison_table("then", compared)
    assert lines[0].startswith("compared with the run of then (3 figures")
    assert [line.split()[0] for line in lines[3:]] == ["b", "a", "c"]
    assert "-50.0%" in lines[4] and "n/a" in lines[5]


def run_bench(directory: Path, *args: str) -> dict[str, object]:
    """``dfs-bench ARGS --json --dir DIRECTORY`` as a user runs it; its report, once it has left nothing behind."""
    return run_bench_with_notes(directory, *args)[0]


def run_bench_with_notes(directory: Path, *args: str) -> tuple[dict[str, object], list[str]]:
    """``run_bench``, and the lines it said on standard error as it went."""
    command = Path(sys.executable).parent / "dfs-bench"
    result = subprocess.run(
        [str(command), *args, "--json", "--dir", str(directory)],
        capture_output=True,
        cwd=directory,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert list(directory.iterdir()) == []
    assert processes_started_in(directory) == []
    report: dict[str, object] = json.loads(result.stdout)
    return report, result.stderr.decode().splitlines()


def assert_set_beside(figures: dict[str, dict[str, float]], key: str, versus: str) -> None:
    """Figure ``key``'s baseline is figure ``versus``'s own value, and its ratio is the one over the other."""
    figure = figures[key]
    assert figure["dfsd"] > 0 and figure["baseline"] == figures[versus]["dfsd"], key
    assert figure["ratio"] == pytest.approx(figure["dfsd"] / figure["baseline"], rel=0.01, abs=0.001), key


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A temporary directory that PostgreSQL can reach when, under root, it runs as the postgres user (pytest's own
    temporary directories sit in one only root may enter)."""
    directory = Path(tempfile.mkdtemp(prefix="dfs-bench-test-"))
    directory.chmod(0o711)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_backends_side_by_side_sets_postgresql_rows_beside_sqlites(reachable_dir: Path) -> None:
    """Both backends in one run: SQLite's cluster measured in full, then PostgreSQL's 1 KiB phases right after SQLite's
    on a throwaway server of the run's own (stopped and removed with everything else), each as a ratio to SQLite's."""
    report = run_bench(reachable_dir, *TINY, "--backends", "sqlite,postgresql")

    figures = report["figures"]
    assert isinstance(figures, dict)
    assert set(figures) == EXPECTED_KEYS | {f"postgresql.{key}" for key in COMPARED}
    for key in COMPARED:
        assert_set_beside(figures, f"postgresql.{key}", key)
    assert [(c["backend"], c["managers"]) for c in report["clusters"]] == [("sqlite", 1), ("postgresql", 1)]
    assert "on PostgreSQL" in report["clusters"][1]["description"]

    lines = table(report)
    assert sum(line.startswith("compared with: private: a manager") for line in lines) == 1
    for key in COMPARED:
        assert sum(line.startswith(figures[f"postgresql.{key}"]["label"] + "  ") for line in lines) == 1, key
    assert any(line.startswith("1.0 KiB read on PostgreSQL vs SQLite  ") for line in lines)


def test_two_managers_on_one_database_report_aggregate_rows_and_compare(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """--db and --managers 2: the whole run on PostgreSQL, through the first manager, and the 1 KiB phases again with
    the clients spread over both managers, beside one manager serving them all; --compare sets the new rows beside an
    earlier report's. The second manager starts only after the last figure of one manager: until then the first runs
    alone, as the rows of one manager say."""
    key = "postgresql.2-managers.small.1KiB.read.rate"
    old = {
        "machine": {"date": "2026-01-01T00:00:00+00:00"},
        "figures": {
            key: {
                "label": "old label",
                "unit": "req/s",
                "dfsd": 100.0,
                "baseline": 200.0,
                "ratio": 0.5,
                "better": "higher",
            }
        },
    }
    old_path = tmp_path.parent / f"{tmp_path.name}-old.json"
    old_path.write_text(json.dumps(old))
    database = postgres_server.create_database()
    report, notes = run_bench_with_notes(
        tmp_path, *TINY, "--db", database.url, "--managers", "2", "--compare", str(old_path)
    )
    started = [line for line in notes if line.startswith("dfs-bench: started ")]
    assert "dfsd manager 2" not in started[0]
    [started_second] = [n for n, line in enumerate(notes) if line.startswith("dfs-bench: started dfsd manager 2 for")]
    one_manager = [n for n, line in enumerate(notes) if line.startswith("dfs-bench: 1.0 KiB ") and "via 2" not in line]
    two_managers = [n for n, line in enumerate(notes) if line.startswith("dfs-bench: 1.0 KiB ") and "via 2" in line]
    assert len(two_managers) == 3 and max(one_manager) < started_second < min(two_managers)

    figures = report["figures"]
    assert isinstance(figures, dict)
    assert set(figures) == EXPECTED_KEYS | {f"postgresql.2-managers.{key}" for key in COMPARED}
    for compared in COMPARED:
        assert_set_beside(figures, f"postgresql.2-managers.{compared}", compared)
    [cluster] = report["clusters"]
    assert (cluster["backend"], cluster["managers"], cluster["database"]) == ("postgresql", 2, database.url)
    assert report["cluster"].startswith("private: 2 managers") and "metadata on PostgreSQL" in report["cluster"]
    assert any(line.startswith("1.0 KiB read via 2 managers vs 1  ") for line in table(report))

    compared_rows = report["comparison"]["figures"]
    assert set(compared_rows) == {key}
    assert (compared_rows[key]["old"], compared_rows[key]["new"]) == (100.0, figures[key]["dfsd"])
    assert compared_rows[key]["new_ratio"] == figures[key]["ratio"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--managers", "2"], "add --backends sqlite,postgresql or --db"),
        (["--backends", "sqlite,mysql"], "give each of sqlite, postgresql at most once"),
        (["--backends", "sqlite,sqlite"], "give each of sqlite, postgresql at most once"),
        (["--db", "mysql://u@h:1/d"], "is not postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME"),
        (["--db", "postgresql://u@h:1/d", "--backends", "sqlite"], "add postgresql to --backends"),
        (["--managers", "0", "--backends", "postgresql"], "--managers must be at least 1"),
        (["--manager", "127.0.0.1:1", "--backends", "postgresql"], "leave them out with --manager"),
        (["--phases", "large", "--backends", "sqlite,postgresql"], "add small to --phases"),
        (["--phases", "large,gateway", "--backends", "postgresql", "--managers", "2"], "add small to --phases"),
    ],
)
def test_cluster_options_that_cannot_work_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 64
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ("gateway", "gateway needs large too"),
        ("large,tiny", "name some of large, small, gateway"),
        ("", "name some of large, small, gateway"),
    ],
)
def test_phases_that_cannot_work_are_usage_errors(
    phases: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--phases", phases])
    assert exit.value.code == 64
    assert message in capsys.readouterr().err


def test_phases_are_run_in_their_own_order_whatever_the_list_says() -> None:
    assert chosen_phases(None) == ("large", "small", "gateway")
    assert chosen_phases("Gateway, large") == ("large", "gateway")
    assert chosen_phases("small") == ("small",)


def test_a_directory_postgres_cannot_enter_is_named(tmp_path: Path) -> None:
    """As root, PostgreSQL runs as the postgres user: the first directory on the way that it may not enter is the one
    the error names, instead of initdb's bare "Permission denied"."""
    nobody = pwd.struct_passwd(("dfs-bench-nobody", "x", 65534, 65534, "", "/", "/bin/false"))
    closed, inner = tmp_path / "closed", tmp_path / "closed" / "open"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    inner.chmod(0o755)
    assert unreachable_ancestor(inner, nobody) == closed
    closed.chmod(0o711)
    assert unreachable_ancestor(inner, nobody) not in (closed, inner)  # above tmp_path, pytest's own may block
    with tempfile.TemporaryDirectory() as open_dir:
        Path(open_dir).chmod(0o755)
        assert unreachable_ancestor(Path(open_dir), nobody) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_bench_under_root_names_the_directory_postgres_cannot_enter(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "dfs-bench"
    result = subprocess.run(
        [str(command), "--backends", "sqlite,postgresql", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot enter" in result.stderr and "hint:" in result.stderr
    assert list(tmp_path.iterdir()) == []

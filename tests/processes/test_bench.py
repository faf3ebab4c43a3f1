"""dfs-bench: one quick run as a user starts it, for correctness only — every figure present with both numbers and
their ratio, the bytes checked (a mismatch fails the run), nothing left behind. No speed is ever asserted: it depends on
the machine. The helpers the figures rest on are tested directly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dfsd.protocol import ChecksumMismatch, ProtocolError
from dfsd.tools.bench import BLOCK, Pattern, Timings, comparison, comparison_table, parse_size, table

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
    "gateway.large.upload",
    "gateway.large.download",
    "gateway.large.upload.peak_memory",
    "gateway.large.download.peak_memory",
    "gateway.small.4KiB.write.rate",
    "gateway.small.4KiB.read.rate",
}


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

    assert report["settings"] == {"large_size": 64 * 1024**2, "files": 500, "clients": 16, "sizes": [1024, 65536]}
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

    # The temporary directory is gone, and so is every process started in it (daemons and baseline servers alike).
    assert list(tmp_path.iterdir()) == []
    assert processes_started_in(tmp_path) == []


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

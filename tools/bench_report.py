"""dfs-bench's report: the figures of a run as a table, as one JSON object (``--json``), and beside an earlier run's
(``--compare OLD.json``). It works on the report as a plain dict, the same one ``--json`` prints, so an old report
read back from a file is compared exactly as a fresh one is shown, and nothing here depends on how a figure was made.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import format_table, human_size

NUMBER_FORMATS = {"MB/s": "{:,.1f}", "req/s": "{:,.0f}", "ms": "{:,.2f}", "MiB": "{:,.1f}"}


def number(value: float | None, unit: str) -> str:
    return "n/a" if value is None else NUMBER_FORMATS.get(unit, "{:,.2f}").format(value)


def table(report: dict[str, Any]) -> list[str]:
    """The report as lines of text: what ran where, then one row per figure."""
    machine, settings = report["machine"], report["settings"]

    rows = [
        (
            figure["label"],
            figure["unit"],
            number(figure["dfsd"], figure["unit"]),
            number(figure["baseline"], figure["unit"]),
            "n/a" if figure["ratio"] is None else f"{figure['ratio']:.2f}",
        )
        for figure in report["figures"].values()
    ]
    when = datetime.fromisoformat(machine["date"]).strftime("%Y-%m-%d %H:%M:%S %Z")
    notes = (
        "Baselines: for the large file, the same bytes through three processes with no protocol: a client "
        "sending the file with sendfile, a uvloop relay forwarding what arrives, a sink writing a file on the same "
        "disk around the page cache and fsyncing it at the end (and back: the sink sendfiles it from the page cache, "
        "the client drops the bytes, or for dfs-cat -o writes a temporary file renamed into place, around the page "
        "cache, as -o does); large socket buffers. Its memory figures are the "
        "relay's (beside the manager), the sink's (beside the node) and its client's (beside dfs-push's and "
        "dfs-cat's); dfs-push, dfs-cat and the baseline's client are timed as processes, start-up included. "
        f"For small files, bare CBOR request/answer frames over loopback, "
        f"{settings['clients']} connections, one hop, the same payloads, nothing stored. "
        "Gateway rows: the same work through dfsd gateway (S3 over HTTP, one keep-alive connection per client), "
        "against the CBOR client's figure of this run (memory: against the manager's); the large file's also "
        "against the commands dfs-push and dfs-cat -o, though those pay a process's start-up "
        "and dfs-cat -o writes its file, which the gateway's GET does not. "
        "Ratio = dfsd / baseline: for rates, below 1 is slower; for latencies and memory, above 1 is more. "
        f"Peak memory: {report['peak_memory']}." + comparison_notes(report.get("clusters", []), settings["clients"])
    )
    return [
        f"dfs-bench {when}: {machine['cpus']} CPUs, {machine['python']}, {machine['platform']}, dfsd {report['dfsd']}",
        f"cluster: {report['cluster']}",
        *(f"compared with: {cluster['description']}" for cluster in report.get("clusters", [])[1:]),
        f"large file: {human_size(settings['large_size'])} up and down; small files: {settings['files']:,} of each "
        f"size, {settings['clients']} clients, read back and deleted in random order",
        f"manager read cache: {read_cache(settings.get('read_cache', 'unknown'))}",
        f"run time: {report['seconds']:g} s",
        "",
        *format_table(("FIGURE", "UNIT", "DFSD", "BASELINE", "DFSD/BASELINE"), rows, (False, False, True, True, True)),
        "",
        *textwrap.wrap(notes, 120),
    ]


def read_cache(capacity: int | str | None) -> str:
    """The managers' read cache (``--read-cache``) as the report shows it."""
    if capacity is None:
        return "the existing cluster's own setting"
    if capacity == 0:
        return "off (--read-cache 0)"
    return capacity if isinstance(capacity, str) else f"{human_size(capacity)} (--read-cache {capacity})"


def comparison_notes(clusters: list[dict[str, Any]], clients: int) -> str:
    """What the rows comparing backends and manager counts are set beside (nothing when the run had none)."""
    notes = ""
    for cluster in clusters[1:]:
        first = clusters[0]
        notes += (
            f" Rows 'on {cluster['name']} vs {first['name']}': the same 1 KiB phase through a manager on "
            f"{cluster['name']}, measured right after {first['name']}'s; the baseline is {first['name']}'s figure, so "
            f"the ratio is {cluster['name']} / {first['name']}."
        )
    for cluster in clusters:
        if cluster["managers"] > 1:
            notes += (
                f" Rows 'via {cluster['managers']} managers vs 1': the {clients} clients spread evenly over "
                f"{cluster['managers']} managers on one {cluster['name']} database; the baseline is the first of them "
                "serving all the clients, so the ratio is the aggregate's gain. The other managers start only after "
                "every figure of one manager (its write, read and delete phases): until then that manager runs alone."
            )
    return notes


def comparison(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every figure present in both reports, before and after: dfsd's value in each, the change (new / old - 1) and
    each report's ratio to its own baseline (the figure that survives a change of machine load)."""
    compared = {}
    for key, after in new["figures"].items():
        before = old["figures"].get(key)
        if before is None:
            continue
        change = None if not before["dfsd"] or after["dfsd"] is None else after["dfsd"] / before["dfsd"] - 1
        compared[key] = {
            "label": after["label"],
            "unit": after["unit"],
            "old": before["dfsd"],
            "new": after["dfsd"],
            "change": None if change is None else round(change, 4),
            "old_ratio": before["ratio"],
            "new_ratio": after["ratio"],
            "better": after["better"],
        }
    return compared


def comparison_table(old_date: str, compared: dict[str, dict[str, Any]]) -> list[str]:
    """The comparison as lines of text, one row per figure present in both reports."""

    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    rows = [
        (
            row["label"],
            row["unit"],
            number(row["old"], row["unit"]),
            number(row["new"], row["unit"]),
            "n/a" if row["change"] is None else f"{row['change']:+.1%}",
            ratio(row["old_ratio"]),
            ratio(row["new_ratio"]),
        )
        for row in compared.values()
    ]
    headers = ("FIGURE", "UNIT", "OLD", "NEW", "CHANGE", "OLD/BASELINE", "NEW/BASELINE")
    return [
        f"compared with the run of {old_date} ({len(rows)} figures in both):",
        "",
        *format_table(headers, rows, (False, False, True, True, True, True, True)),
    ]


def load_report(path: Path) -> dict[str, Any]:
    """An earlier ``dfs-bench --json`` report; ValueError saying what is wrong with it."""
    try:
        report = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(report, dict) or not isinstance(report.get("figures"), dict):
        raise ValueError(f"{path} is not a dfs-bench --json report (it has no figures)")
    return report

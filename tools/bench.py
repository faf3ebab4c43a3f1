"""dfs-bench: how fast dfsd moves large files and answers small ones on this machine, each figure next to a baseline
measured in the same run, so that what matters is the ratio and a busy or noisy machine changes little of it. This
module is the command: its options, the order of a run, and the report it prints; the work is in its siblings.

Theory of operation. By default the benchmark starts a private cluster in a temporary directory — a manager and one
storage node, as ``python -m dfsd ...`` processes with their default settings (each request logged at info level to a
file), open (no secret, no TLS) — and, beside it, the baseline servers of ``bench_baselines``: a relay and a sink for
streaming, an echo server for round trips; and a gateway (``bench_cluster``). All of them are stopped and the directory
removed at the end, whatever happens. With ``--manager HOST:PORT`` it uses that cluster instead (its processes' memory
cannot be measured then), and deletes whatever it stored there; the baselines still run on this machine.

The manager keeps its metadata in SQLite unless ``--db postgresql://...`` names a PostgreSQL database, or
``--backends sqlite,postgresql`` asks for both: then a second private cluster runs on PostgreSQL (on a throwaway server
that dfs-bench starts in its temporary directory, with PostgreSQL's durable defaults, when no ``--db`` is given), and
its 1 KiB small-file phases are measured right after the first cluster's, against them. ``--managers N`` runs N
managers on the PostgreSQL database, and the same phases with the clients spread over all of them, against one; the
N-1 others start only once every figure of one manager is taken, so that one ran alone.

* Large file (``bench_large``): one file of ``--large-size`` bytes (1 GiB) up through the client library and as
  ``dfs-push FILE``, down through ``get`` and as ``dfs-cat NAME -o FILE``, every byte checked; each of the four right
  after its baseline, the machine's best with no protocol over the same three hops and the same disk; peak memory of
  every process on the way.
* Small files (``bench_small``), the shape of SeaweedFS's ``weed benchmark``: ``-n`` files (20,000) of 1 KiB, then of
  64 KiB, written by 16 concurrent clients, read back in random order and checked, then deleted in random order:
  requests per second and the p50/p99 latency of each phase. The baseline sends the same number of bare CBOR
  request/answer frames, with the same payloads and as many connections.
* Gateway (``bench_gateway``): the large file and 4 KiB objects through ``dfsd gateway``, against the CBOR client.

``--phases`` runs only some of the three (``--phases large,gateway``: the gateway's rows in a few minutes, the small
files left out).

Each dfsd phase runs right after its baseline, so both see the same machine. Ratios are dfsd / baseline: below 1 a rate
is slower than the baseline's; above 1 a latency is longer and memory larger. The report (``bench_report``) is a
table, or one JSON object with ``--json``, and ``--compare OLD.json`` sets each figure beside an earlier run's.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dfsd.client import Client, DfsError, manager_addresses
from dfsd.client import run as run_async

from .bench_cluster import (
    BACKEND_NAMES,
    DEFAULT_READ_CACHE,
    POSTGRESQL,
    SQLITE,
    BenchFailed,
    Child,
    ClusterPlan,
    Setup,
    remove_leftovers,
    start_processes,
    stop_all,
    wait_for_nodes,
)
from .bench_gateway import gateway_figures
from .bench_large import large_file
from .bench_measure import Figure, Plan
from .bench_report import comparison, comparison_table, load_report, table
from .bench_small import small_files, targets_of
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Failures,
    UsageParser,
    add_manager_option,
    human_size,
    parse_size,
    say,
    size,
)
from .throwaway_postgres import PostgresFailed, ThrowawayPostgres

PROG = "dfs-bench"

DEFAULT_LARGE_SIZE = 1024**3
DEFAULT_FILES = 20_000
QUICK_LARGE_SIZE = 64 * 1024**2
QUICK_FILES = 500
# The packages whose directories hold dfsd's modules (an editable install maps protocol/ and tools/ in from beside it).
PACKAGES = ("dfsd", "dfsd.protocol", "dfsd.tools")
CLIENTS = 16
# The parts of a run, in the order they run: ``--phases`` picks some. The gateway's rows are set beside the large
# file's, so they need that part too.
LARGE, SMALL, GATEWAY = "large", "small", "gateway"
PHASES = (LARGE, SMALL, GATEWAY)

EPILOG = """\
exit status:
  0      success
  1-11   an error from the cluster, as for dfs-push (see its --help); 7 when bytes read back differ from those written
  1      also when a process of the benchmark (a dfsd daemon, a baseline server, PostgreSQL) does not start or dies
  64     wrong command line
  130    interrupted (Ctrl-C)
"""


async def measure(
    plan: Plan, setup: Setup, note: Callable[[str], None], phases: tuple[str, ...] = PHASES
) -> tuple[list[Figure], int, bool]:
    """The figures of ``phases``; also the number of storage nodes up, and whether peak memory was reset for each
    direction."""
    async with Client(setup.address, setup.security) as client:
        nodes = await wait_for_nodes(client, setup)
        note(f"{nodes} storage node(s) up; measuring {', '.join(phases)}")
        figures: list[Figure] = []
        reset = True
        try:
            if LARGE in phases:
                figures, reset = await large_file(plan, setup, client, note)
            if SMALL in phases:
                targets = targets_of(setup)
                for size in plan.sizes:
                    figures += await small_files(plan, setup, size, targets, note)
            if GATEWAY in phases:
                figures += await gateway_figures(plan, setup, figures, note)
        finally:
            if setup.manager is None:  # someone else's cluster: take away what this run stored
                await remove_leftovers(client, setup.prefix)
    return figures, nodes, reset


def compile_bytecode() -> None:
    """Write dfsd's bytecode, as ``pip install`` does, where it is missing: the commands and baselines dfs-bench
    times as processes would otherwise compile every module they import at each start (an editable install run with
    PYTHONDONTWRITEBYTECODE set never keeps any), a start-up that no installed user pays."""
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for directory in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(directory, quiet=2)


def cpu_count() -> int:
    """The CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def start_postgres(root: Path, stack: contextlib.ExitStack, note: Callable[[str], None]) -> str:
    """A throwaway PostgreSQL server in ``root``, stopped when ``stack`` closes; the URL of its database."""
    root.chmod(0o711)  # as root, PostgreSQL runs as the postgres user, who must pass through to its own directory
    server = ThrowawayPostgres(root)
    stack.callback(server.halt)  # its directory goes with ``root``, or is kept with it
    note(f"starting a throwaway PostgreSQL server in {server.root}")
    server.start()
    return server.url_for()


def run(
    plan: Plan,
    clusters: ClusterPlan,
    manager: str | None,
    parent: Path | None,
    keep: bool,
    note: Callable[[str], None],
    phases: tuple[str, ...] = PHASES,
) -> dict[str, Any]:
    """Start what is needed, measure, stop everything and remove the temporary directory (unless ``keep``); the
    report as a dict."""
    date = datetime.now(UTC)
    started = time.monotonic()
    compile_bytecode()
    children: list[Child] = []
    root = Path(tempfile.mkdtemp(prefix="dfs-bench-", dir=parent))

    def finish() -> None:
        if keep:
            note(f"kept {root} (the processes' logs, the manager's database, the node's data)")
        else:
            shutil.rmtree(root, ignore_errors=True)

    with contextlib.ExitStack() as stack:
        stack.callback(finish)
        database = clusters.database
        if manager is None and clusters.needs_postgres_server:
            database = start_postgres(root, stack, note)
        stack.callback(stop_all, children)  # the daemons stop before the database they use
        setup = start_processes(root, manager, clusters, database, children)
        note(f"started {', '.join(child.name for child in children)} in {root}")
        figures, nodes, reset = run_async(measure(plan, setup, note, phases))
    return {
        "machine": {
            "cpus": cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(terse=True),
            "date": date.isoformat(timespec="seconds"),
        },
        "dfsd": importlib.metadata.version("dfsd"),
        "cluster": setup.clusters[0].describe(nodes),
        "clusters": [
            {
                "backend": cluster.backend,
                "name": cluster.name,
                "managers": len(cluster.addresses),
                "database": cluster.database,
                "description": cluster.describe(nodes if cluster is setup.clusters[0] else 1),
            }
            for cluster in setup.clusters
        ],
        "settings": {
            "large_size": plan.large_size,
            "files": plan.files,
            "clients": plan.clients,
            "sizes": plan.sizes,
            "read_cache": None if manager is not None else clusters.read_cache,  # None: the existing cluster's own
        },
        "peak_memory": "per direction" if reset else "since each process started (the kernel refused a reset)",
        "seconds": round(time.monotonic() - started, 1),
        "figures": {figure.key: figure.as_json() for figure in figures},
    }


def cluster_plan(
    backends: str | None, database: str | None, managers: int, read_cache: int | None = None
) -> ClusterPlan:
    """The private clusters the options ask for; ValueError saying which option is wrong and how."""
    if database is not None:
        parts = urlsplit(database)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or len(parts.path) < 2:
            raise ValueError(f"--db: {database!r} is not postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME")
    chosen: tuple[str, ...]
    if backends is None:
        chosen = (POSTGRESQL,) if database is not None else (SQLITE,)
    else:
        chosen = tuple(name.strip().lower() for name in backends.split(","))
        unknown = [name for name in chosen if name not in BACKEND_NAMES]
        if unknown or len(set(chosen)) != len(chosen):
            raise ValueError(f"--backends: {backends!r}: give each of {', '.join(BACKEND_NAMES)} at most once")
    if database is not None and POSTGRESQL not in chosen:
        raise ValueError("--db names a PostgreSQL database: add postgresql to --backends")
    if managers < 1:
        raise ValueError("--managers must be at least 1")
    if managers > 1 and POSTGRESQL not in chosen:
        raise ValueError("--managers 2 or more share one PostgreSQL database: add --backends sqlite,postgresql or --db")
    return ClusterPlan(chosen, managers, database, DEFAULT_READ_CACHE if read_cache is None else read_cache)


def chosen_phases(text: str | None) -> tuple[str, ...]:
    """The parts of a run ``--phases`` names, in the order they run; ValueError saying what is wrong."""
    if text is None:
        return PHASES
    named = [name.strip().lower() for name in text.split(",")]
    unknown = [name for name in named if name not in PHASES]
    if unknown or not named:
        raise ValueError(f"{text!r}: name some of {', '.join(PHASES)}, comma-separated")
    if GATEWAY in named and LARGE not in named:
        raise ValueError(f"{GATEWAY} needs {LARGE} too: its rows are set beside the large file's figures")
    return tuple(phase for phase in PHASES if phase in named)


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(
        prog=PROG,
        description="Measure dfsd on this machine next to baselines run alongside: one large file up and down "
        "(MB/s, peak memory), then many small files written, read and deleted by concurrent clients (requests/s, "
        "p50/p99 latency). Starts a private cluster (a manager and one storage node) in a temporary directory unless "
        "--manager names one; --backends and --managers add PostgreSQL and several managers, side by side.",
        epilog=EPILOG,
    )
    add_manager_option(parser, help="benchmark this existing cluster instead of starting a private one")
    parser.add_argument(
        "--db",
        metavar="postgresql://USER@HOST:PORT/DB",
        help="the private cluster's managers keep their metadata in this PostgreSQL database (as dfsd manager --db "
        "takes it) instead of SQLite, or, with --backends sqlite,postgresql, instead of a throwaway server's",
    )
    parser.add_argument(
        "--backends",
        metavar="LIST",
        help="metadata backends to measure side by side, comma-separated: sqlite, postgresql (default: sqlite, or "
        "postgresql with --db). The first is measured in full; each other one's 1 KiB small files right after it, "
        "as a ratio to it. PostgreSQL without --db: a throwaway server started in the temporary directory",
    )
    parser.add_argument(
        "--managers",
        type=int,
        default=1,
        metavar="N",
        help="run N managers on the PostgreSQL database and measure the 1 KiB small files with the clients spread "
        "over all of them, beside one manager serving them all (N >= 2 needs postgresql in --backends or --db)",
    )
    parser.add_argument(
        "--read-cache",
        type=size,
        metavar="SIZE",
        help="the private cluster's managers keep this much memory of small files' bytes (dfsd manager --read-cache; "
        f"default: its default, {human_size(DEFAULT_READ_CACHE)}); 0 measures the reads without it",
    )
    parser.add_argument("-n", "--files", type=int, help=f"small files of each size (default {DEFAULT_FILES:,})")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"concurrent clients for small files ({CLIENTS})")
    parser.add_argument(
        "--large-size", metavar="SIZE", help="the large file's size, e.g. 1G, 256M (default 1G; --quick: 64M)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a small run of seconds: {QUICK_FILES} files, a 64 MiB large file"
    )
    parser.add_argument(
        "--phases",
        metavar="LIST",
        help=f"measure only these parts, comma-separated: {', '.join(PHASES)} (default: all); {GATEWAY} needs "
        f"{LARGE}, whose figures its rows are set beside",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--compare",
        metavar="OLD.json",
        type=Path,
        help="also print each figure beside its value in OLD.json (an earlier --json report): old, new, change",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to make the temporary directory (default: the system's); its disk is measured"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, database, data) instead of removing it"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on standard error")
    args = parser.parse_args(argv)

    try:
        large_size = parse_size(args.large_size) if args.large_size else None
    except ValueError as err:
        parser.error(f"--large-size: {err}")
    if args.manager is not None:
        try:
            manager_addresses(args.manager)
        except ValueError as err:
            parser.error(f"--manager: {err}")
    if args.manager is not None and (args.db or args.backends or args.managers != 1 or args.read_cache is not None):
        parser.error(
            "--db, --backends, --managers and --read-cache shape the private cluster: leave them out with --manager"
        )
    try:
        clusters = cluster_plan(args.backends, args.db, args.managers, args.read_cache)
    except ValueError as err:
        parser.error(str(err))
    try:
        phases = chosen_phases(args.phases)
    except ValueError as err:
        parser.error(f"--phases: {err}")
    if SMALL not in phases and (len(clusters.backends) > 1 or clusters.managers > 1):
        parser.error("--backends with two backends and --managers compare the small files: add small to --phases")
    old = None
    if args.compare is not None:
        try:
            old = load_report(args.compare)
        except ValueError as err:
            parser.error(f"--compare: {err}")
    files = args.files if args.files is not None else QUICK_FILES if args.quick else DEFAULT_FILES
    if files < 1 or args.clients < 1:
        parser.error("-n and --clients must be at least 1")
    plan = Plan(large_size or (QUICK_LARGE_SIZE if args.quick else DEFAULT_LARGE_SIZE), files, args.clients)

    def note(line: str) -> None:
        if not args.quiet:
            say(f"{PROG}: {line}")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    failures = Failures(PROG)
    try:
        report = run(plan, clusters, args.manager, args.dir, args.keep, note, phases)
    except DfsError as err:
        return failures.error(err)
    except BenchFailed as err:
        return failures.add(1, str(err), err.hint)
    except PostgresFailed as err:
        return failures.add(
            1, str(err), "--dir DIR puts the throwaway server where you choose; --db a database of your own"
        )
    except ValueError as err:  # a malformed $DFS_* setting
        return failures.add(EXIT_USAGE, str(err), "fix the setting it names")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = table(report)
    if old is not None:
        compared = comparison(old, report)
        old_date = old.get("machine", {}).get("date", str(args.compare))
        report["comparison"] = {"old": str(args.compare), "old_date": old_date, "figures": compared}
        lines += ["", *comparison_table(old_date, compared)]
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines), flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

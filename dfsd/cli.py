"""The ``dfsd`` command: run a manager, a storage node or a whole local cluster, and show a cluster's status.

Daemons log to standard error and print exactly one line to standard output once they accept connections
(``dfsd manager listening on HOST:PORT``), so scripts and tests wait for that line instead of sleeping.
SIGTERM and Ctrl-C stop a daemon cleanly: the listener closes and the database is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import structlog

from . import aio, logs
from .client import Client, manager_address
from .config import apply_defaults, config_path
from .manager.store import Location, MetadataStore, StoreError, database_location
from .protocol import MAX_FRAME_SIZE, MAX_NAME_BYTES, ChecksumMismatch, DfsError, FileUnavailable
from .protocol.limits import CHUNK_SIZE
from .settings import Limits, Security
from .usage import UsageParser

# A data frame holds a whole CHUNK_SIZE chunk plus a small header: no smaller frame limit can carry an upload.
MIN_FRAME_SIZE = CHUNK_SIZE + 1024

DEFAULT_DATA = Path("dfs-data")


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="dfsd", description="dfsd: a small distributed file server.")
    commands = parser.add_subparsers(dest="command", required=True)

    manager = commands.add_parser("manager", help="run the manager (clients and storage nodes connect to it)")
    manager.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    manager.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")
    manager.add_argument(
        "--db",
        type=database_location,
        default=DEFAULT_DATA / "manager.db",
        help="the metadata database: a SQLite file, or postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME",
    )
    manager.add_argument(
        "--node-timeout", type=float, default=3.0, help="seconds without a heartbeat before a node is down (3)"
    )
    manager.add_argument(
        "--no-auto-rebalance",
        dest="auto_rebalance",
        action="store_false",
        help="do not move files when a node joins; run `dfsd rebalance` by hand instead",
    )

    storage = commands.add_parser("storage", help="run a storage node")
    storage.add_argument("--id", type=int, help="this node's id, unique in the cluster (required)")
    storage.add_argument(
        "--manager", metavar="HOST:PORT", help="the manager (default $DFS_MANAGER, else 127.0.0.1:8000)"
    )
    storage.add_argument("--data", type=Path, help="data directory (default dfs-data/node-ID)")
    storage.add_argument("--host", default="127.0.0.1", help="address to serve data on (default 127.0.0.1)")
    storage.add_argument("--port", type=int, default=0, help="port to serve data on; 0 picks a free one (default)")
    storage.add_argument(
        "--advertise",
        metavar="HOST[:PORT]",
        help="the address the manager and other nodes dial (default: --host)",
    )
    storage.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default 1)")
    storage.add_argument(
        "--manager-timeout",
        type=float,
        default=5.0,
        help="seconds without an answer from the manager before reconnecting (default 5)",
    )

    cluster = commands.add_parser("cluster", help="run a manager and storage nodes on this machine until Ctrl-C")
    cluster.add_argument("--nodes", type=int, default=3, help="how many storage nodes (default 3)")
    cluster.add_argument("--port", type=int, default=8000, help="the manager's port (default 8000)")
    cluster.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where everything is kept (default dfs-data)")

    status = commands.add_parser(
        "status",
        help="show every storage node and the totals",
        description="Show every storage node (up or down, files, bytes, lost and orphaned files, last heartbeat),\n"
        "the totals, the rebalancer and any lost files: an aligned table, or one JSON object with --json.",
        epilog="exit status:\n  0      success\n  1      the manager cannot be reached (start it, or fix --manager)\n"
        "  2-11   another error from the cluster, as for dfs-push (see its --help)\n  64     wrong command line",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="one JSON object for scripts: nodes (a list), files, bytes, lost (names), rebalance (or null)",
    )
    rebalance = commands.add_parser("rebalance", help="even out the file counts of the nodes now, showing progress")
    scrub = commands.add_parser(
        "scrub", help="re-read every file on every node and report any whose bytes no longer match (exit 7 if so)"
    )
    for sub in (status, rebalance, scrub):
        sub.add_argument(
            "--manager", metavar="HOST:PORT", help="the manager (default $DFS_MANAGER, else 127.0.0.1:8000)"
        )

    for sub in (manager, storage):
        _add_security_flags(sub)
        _add_limit_flags(sub)
        sub.add_argument(
            "--metrics-port",
            type=int,
            help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST: --host; default: no metrics)",
        )
        sub.add_argument(
            "--grace",
            type=float,
            default=10.0,
            help="on SIGTERM or Ctrl-C, seconds requests in flight may take to finish before they are cut off (10)",
        )
    for sub in (manager, storage, cluster):
        sub.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        sub.add_argument("--log-json", action="store_true", default=None, help="log JSON lines even on a terminal")

    drain = commands.add_parser(
        "drain", help="retire a storage node: move its files to the others, showing progress, then say when to stop it"
    )
    drain.add_argument("node_id", type=int, metavar="NODE_ID")
    drain.add_argument("--undo", action="store_true", help="take the node back: it gets new files again")
    drain.add_argument("--forget", action="store_true", help="drop an empty, stopped node from the manager's records")
    drain.add_argument("--manager", metavar="HOST:PORT", help="the manager (default $DFS_MANAGER, else 127.0.0.1:8000)")
    backup = commands.add_parser(
        "backup", help="copy the manager's database to DEST safely, even while the manager runs (SQLite online backup)"
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="the file to write (replaced if it exists)")
    backup.add_argument(
        "--db", type=database_location, default=DEFAULT_DATA / "manager.db", help="the manager's database"
    )

    for sub in commands.choices.values():
        sub.add_argument(
            "--config", type=Path, help="a TOML file of settings, below flags and $DFS_* in precedence ($DFS_CONFIG)"
        )
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in commands.choices:
        apply_defaults(commands.choices[argv[0]], argv[0], config_path(argv))
    args = parser.parse_args(argv)
    if args.command == "storage" and args.id is None:
        storage.error("--id is required (or $DFS_ID, or id in the [storage] table of the config file)")
    if args.command == "status":
        return _client_command(args.manager, lambda client: _print_status(client, as_json=args.json))
    if args.command == "rebalance":
        return _client_command(args.manager, _rebalance)
    if args.command == "scrub":
        return _client_command(args.manager, _scrub)
    if args.command == "drain":
        return _client_command(args.manager, lambda client: _drain(client, args.node_id, args.undo, args.forget))
    if args.command == "backup":
        return _backup(args.db, args.dest)
    logs.configure(args.log_level, args.log_json)
    if args.command == "manager":
        return _serve(_manager(args), "dfsd manager")
    if args.command == "storage":
        return _serve(_storage(args), f"dfsd storage {args.id}")
    return _cluster(args)


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (every process of a cluster needs the same settings)")
    group.add_argument(
        "--secret-file",
        type=Path,
        help="file holding the cluster's shared secret, white space around it ignored "
        "(default: $DFS_SECRET_FILE, else the value of "
        "$DFS_SECRET; none: the cluster runs open)",
    )
    group.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate chain (PEM)")
    group.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM), if not in that file")
    group.add_argument(
        "--tls-ca", type=Path, help="use TLS for outgoing connections, trusting this CA (PEM; default $DFS_TLS_CA)"
    )


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    group = parser.add_argument_group("limits on peers")
    group.add_argument(
        "--max-frame-size",
        type=int,
        default=defaults.max_frame_size,
        help=f"largest frame accepted, bytes (default {defaults.max_frame_size}; at least {MIN_FRAME_SIZE})",
    )
    group.add_argument(
        "--max-name-bytes",
        type=int,
        default=defaults.max_name_bytes,
        help=f"longest file name accepted, UTF-8 bytes (default and most {defaults.max_name_bytes})",
    )
    group.add_argument("--max-file-size", type=int, help="largest file accepted, bytes (default: no limit)")
    group.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help=f"connections open at once; more are refused with error 1 (default {defaults.max_connections})",
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help=f"seconds a connection may sit idle between requests (default {defaults.idle_timeout:g})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout,
        help=f"seconds a handshake or request may go without a byte arriving (default {defaults.request_timeout:g})",
    )


def _settings(args: argparse.Namespace) -> tuple[Security, Limits]:
    if not MIN_FRAME_SIZE <= args.max_frame_size <= MAX_FRAME_SIZE:
        raise SystemExit(f"dfsd: --max-frame-size must be from {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}")
    if not 1 <= args.max_name_bytes <= MAX_NAME_BYTES:
        raise SystemExit(f"dfsd: --max-name-bytes must be from 1 to {MAX_NAME_BYTES}")
    security = Security.load(args.secret_file, args.tls_cert, args.tls_key, args.tls_ca)
    limits = Limits(
        args.max_frame_size,
        args.max_name_bytes,
        args.max_file_size,
        args.max_connections,
        args.idle_timeout,
        args.request_timeout,
    )
    return security, limits


class Daemon(Protocol):
    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None: ...

    def stop(self) -> None: ...


def _serve(daemon: Daemon, label: str) -> int:
    """Run a daemon until SIGTERM or Ctrl-C, then let it shut down cleanly; a second signal exits at once."""
    log = structlog.get_logger("dfsd")

    async def guarded() -> None:
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("exiting_now", reason="second signal")
                os._exit(130)
            log.info("stopping", hint="requests in flight may finish; press Ctrl-C again to exit at once")
            daemon.stop()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        await daemon.run(on_ready=lambda host, port: _ready(f"{label} listening on {host}:{port}"))

    try:
        aio.run(guarded())
    except StoreError as err:
        print(f"{label}: {err}", file=sys.stderr)
        return err.exit_status
    return 0


def _manager(args: argparse.Namespace) -> Daemon:
    from .manager.server import Manager

    security, limits = _settings(args)
    return Manager(
        args.db,
        args.host,
        args.port,
        node_timeout=args.node_timeout,
        auto_rebalance=args.auto_rebalance,
        security=security,
        limits=limits,
        grace=args.grace,
        metrics_port=args.metrics_port,
    )


def _storage(args: argparse.Namespace) -> Daemon:
    from .storage.node import StorageNode

    security, limits = _settings(args)
    return StorageNode(
        args.id,
        args.data or DEFAULT_DATA / f"node-{args.id}",
        manager_address(args.manager),
        host=args.host,
        port=args.port,
        advertise=_advertise(args.advertise),
        heartbeat_interval=args.heartbeat,
        manager_timeout=args.manager_timeout,
        security=security,
        limits=limits,
        grace=args.grace,
        metrics_port=args.metrics_port,
    )


def _ready(line: str) -> None:
    print(line, flush=True)


def _advertise(text: str | None) -> tuple[str, int | None] | None:
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (text, None)


def _client_command(address: str | None, work: Callable[[Client], Awaitable[int]]) -> int:
    async def run() -> int:
        async with Client(address) as client:
            return await work(client)

    try:
        return aio.run(run())
    except DfsError as err:
        print(f"dfsd: {err.describe()}", file=sys.stderr)
        return int(err.code)


async def _print_status(client: Client, as_json: bool = False) -> int:
    """The cluster as an aligned table (columns as wide as their widest cell), or as one JSON object."""
    import dataclasses

    # The tools' helpers, so that `dfsd status` and `dfs-ls -l` show sizes, times and tables the same way.
    from .tools.common import dump_json, format_table, human_size, human_time

    status = await client.status()
    if as_json:
        data = dataclasses.asdict(status)
        data["lost"] = data["lost"] or []
        print(dump_json(data, indent=2))
        return 0
    if not status.nodes:
        print("no storage node has registered yet; start one with `dfsd storage --id N --manager HOST:PORT`")
    else:
        headers = ("NODE", "ADDRESS", "STATE", "FILES", "USED", "FREE", "DISK", "LOST", "ORPHANS", "LAST SEEN")
        right = (True, False, False, True, True, True, True, True, True, False)
        rows = [
            (
                str(node.id),
                f"{node.host}:{node.port}",
                "up" if node.up else "DOWN",
                str(node.files),
                human_size(node.used),
                human_size(node.free),
                human_size(node.capacity),
                str(node.lost),
                str(node.orphans),
                human_time(node.last_seen) if node.last_seen else "never",
            )
            for node in status.nodes
        ]
        for line in format_table(headers, rows, right):
            print(line)
    up = sum(node.up for node in status.nodes)
    print(f"total: {up} of {len(status.nodes)} nodes up, {status.files} files, {human_size(status.bytes)}")
    if status.rebalance is not None:
        r = status.rebalance
        state = f"running, {r.remaining} moves left in this round" if r.running else "idle"
        auto = "automatic" if r.auto else "manual only (`dfsd rebalance`)"
        print(f"rebalance: {state}; {r.moved} files moved, {r.failed} moves failed; {auto}")
    if status.lost:
        print(f"LOST FILES ({len(status.lost)} shown; their nodes no longer have the bytes):")
        for name in status.lost:
            print(f"  {name!r}")
    return 0


async def _scrub(client: Client) -> int:
    report = await client.scrub()
    print(
        f"checked {report.checked} files ({_bytes(report.bytes)}): {len(report.corrupt)} corrupt, "
        f"{len(report.missing)} missing, {report.skipped} not checked (node down)"
    )
    for label, names in (("CORRUPT", report.corrupt), ("MISSING", report.missing)):
        for name in names:
            print(f"  {label}  {name!r}")
    if report.corrupt or report.missing:
        print("dfsd scrub: error 7: some files no longer match their checksum; see above", file=sys.stderr)
        return int(ChecksumMismatch.code)
    return 0


async def _rebalance(client: Client) -> int:
    await client.rebalance()
    while True:
        await asyncio.sleep(0.5)
        status = await client.status()
        assert status.rebalance is not None
        counts = ", ".join(f"{node.id}: {node.files}" for node in status.nodes if node.up)
        print(f"moved {status.rebalance.moved}, failed {status.rebalance.failed}; files per node: {counts}", flush=True)
        if not status.rebalance.running:
            return 0


async def _drain(client: Client, node_id: int, undo: bool, forget: bool) -> int:
    status = await client.drain(node_id, undo, forget)
    if undo or forget:
        print(f"node {node_id} takes new files again" if undo else f"node {node_id} is forgotten")
        return 0
    while True:
        (node,) = [node for node in status.nodes if node.id == node_id]
        print(f"node {node_id}: {node.files} files left ({_bytes(node.used)})", flush=True)
        if node.files - node.lost == 0:
            lost = f" ({node.lost} lost files stay recorded on it; see `dfsd status`)" if node.lost else ""
            print(
                f"node {node_id} is empty{lost}: stop its process now, then `dfsd drain {node_id} --forget` "
                "drops it from the records"
            )
            return 0
        if not node.up:
            print(f"dfsd drain: node {node_id} is down; start it again so its files can move", file=sys.stderr)
            return int(FileUnavailable.code)
        await asyncio.sleep(0.5)
        status = await client.status()


def _backup(db: Location, dest: Path) -> int:
    """The metadata store copies its database consistently, even while the manager writes to it."""
    try:
        size = aio.run(MetadataStore.backup(db, dest))
    except StoreError as err:
        print(f"dfsd backup: {err}", file=sys.stderr)
        return err.exit_status
    print(f"backed up {db} to {dest} ({_bytes(size)})")
    return 0


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _cluster(args: argparse.Namespace) -> int:
    """A manager and ``--nodes`` storage nodes as child processes, each with its own data directory."""
    data: Path = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    log_flags = ["--log-level", args.log_level] + (["--log-json"] if args.log_json else [])
    children: list[subprocess.Popen[str]] = []

    def start(*command: str) -> str:
        child = subprocess.Popen(
            [sys.executable, "-m", "dfsd", *command, *log_flags],
            stdout=subprocess.PIPE,
            text=True,
            cwd=data,
            start_new_session=True,  # Ctrl-C reaches only this process, which then stops each child once
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"`dfsd {' '.join(command)}` exited with status {child.wait()} before it was ready")
        return line

    # Both stop the cluster, even where SIGINT arrives ignored (a shell's background job inherits it so).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        address = start("manager", "--port", str(args.port), "--db", str(data / "manager.db")).rpartition(" ")[2]
        for index in range(args.nodes):
            node_id = 100 + index
            start("storage", "--id", str(node_id), "--manager", address, "--data", str(data / f"node-{node_id}"))
        _wait_for_nodes(address, args.nodes)
        manager_flag = "" if address == "127.0.0.1:8000" else f" --manager {address}"
        push, cat, ls = (_command(name) + manager_flag for name in ("dfs-push", "dfs-cat", "dfs-ls"))
        print(
            f"dfsd cluster: manager on {address}, {args.nodes} storage nodes up, data in {data}\n"
            f"In another terminal, store and read back a first file:\n"
            f"  echo hello > hello.txt\n  {push} hello.txt\n  {cat} hello.txt\n  {ls} -l\n"
            f"  {_command('dfsd')} status{manager_flag}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("dfsd cluster: a process exited on its own; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(children)


def _command(name: str) -> str:
    """How to type an installed command: its name if the shell finds this installation's, else its full path."""
    installed = Path(sys.executable).parent / name
    found = shutil.which(name)
    return name if found and Path(found).resolve() == installed.resolve() else str(installed)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_nodes(address: str, count: int, timeout: float = 30.0) -> None:
    async def up_nodes() -> int:
        async with Client(address) as client:
            return sum(node.up for node in (await client.status()).nodes)

    deadline = time.monotonic() + timeout
    while aio.run(up_nodes()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only some of the {count} storage nodes registered within {timeout:g} s")
        time.sleep(0.1)


def _stop(children: list[subprocess.Popen[str]], grace: float = 15.0) -> None:
    """SIGTERM every child (nodes first, so they leave the manager cleanly), then SIGKILL whatever still runs after
    ``grace`` seconds — or at once on a second Ctrl-C."""
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        for child in children:
            child.wait(max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        for child in children:
            child.kill()
            child.wait()

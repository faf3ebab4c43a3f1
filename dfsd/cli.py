"""The ``dfsd`` command: run a manager, a storage node or a whole local cluster.

The operator's commands (``dfsd status``, ``rebalance``, ``scrub``, ``drain``, ``backup``, ``migrate``) are tools like
dfs-ls and live beside them in ``dfsd.tools``; each adds its own subcommand here and runs when it is chosen.

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
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from . import aio, logs, processes
from .client import Client, format_address, manager_addresses
from .config import apply_defaults, config_path
from .manager.read_cache import DEFAULT_CAPACITY
from .manager.store import StoreError, database_location
from .protocol import MAX_FRAME_SIZE, MAX_NAME_BYTES
from .protocol.limits import CHUNK_SIZE
from .settings import Limits, Security
from .tools import backup, drain, migrate, rebalance, scrub, status
from .tools.common import UsageParser, add_manager_option, bad_setting, size

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
    manager.add_argument(
        "--read-cache",
        type=size,
        default=DEFAULT_CAPACITY,
        metavar="SIZE",
        help="memory for the bytes of small files (up to 64 KiB) read or written lately, served without the hop to "
        f"their node; e.g. 64M, 0 turns it off (default {DEFAULT_CAPACITY // 1024**2}M)",
    )

    storage = commands.add_parser("storage", help="run a storage node")
    storage.add_argument("--id", type=int, help="this node's id, unique in the cluster (required)")
    add_manager_option(
        storage,
        "the manager, or several as HOST:PORT,HOST:PORT,... (sharing one database): the node keeps a session with "
        "each (default: $DFS_MANAGER, else 127.0.0.1:8000)",
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

    gateway = commands.add_parser("gateway", help="run an S3 and REST gateway (HTTP) in front of a manager")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gateway.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one (default 9000)")
    add_manager_option(gateway)
    gateway.add_argument(
        "--credentials",
        type=Path,
        help="TOML file of [[user]] tables (name, access_key, secret_key); default: $DFS_S3_ACCESS_KEY and "
        "$DFS_S3_SECRET_KEY",
    )
    gateway.add_argument(
        "--anonymous", action="store_true", help="serve unsigned requests too, as the user 'anonymous' (unsafe)"
    )
    gateway.add_argument(
        "--upload-expiry",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="abort multipart uploads begun longer ago than this, with their parts (default 24)",
    )
    gateway.add_argument(
        "--domain",
        default="",
        help="serve virtual-host-style requests for BUCKET.DOMAIN (default: path-style only)",
    )

    cluster = commands.add_parser("cluster", help="run a manager and storage nodes on this machine until Ctrl-C")
    cluster.add_argument("--nodes", type=int, default=3, help="how many storage nodes (default 3)")
    cluster.add_argument("--port", type=int, default=8000, help="the manager's port (default 8000)")
    cluster.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where everything is kept (default dfs-data)")
    cluster.add_argument("--gateway-port", type=int, default=9000, help="the S3 gateway's port (default 9000)")
    cluster.add_argument("--no-gateway", dest="gateway", action="store_false", help="do not start the S3 gateway")

    for tool in (status, rebalance, scrub, drain):
        tool.add_parser(commands)
    backup.add_parser(commands, DEFAULT_DATA / "manager.db")
    migrate.add_parser(commands)

    for sub in (manager, storage):
        _add_limit_flags(sub)
    for sub in (manager, storage, gateway):
        sub.add_argument(
            "--metrics-port",
            type=int,
            help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST: --host; default: no metrics)",
        )
    for sub in (manager, storage, gateway):
        _add_security_flags(sub)
        sub.add_argument(
            "--grace",
            type=float,
            default=10.0,
            help="on SIGTERM or Ctrl-C, seconds requests in flight may take to finish before they are cut off (10)",
        )
    for sub in (manager, storage, gateway, cluster):
        sub.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        sub.add_argument("--log-json", action="store_true", default=None, help="log JSON lines even on a terminal")

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
    if "execute" in args:  # an operator's command, from dfsd.tools
        return int(args.execute(args))
    logs.configure(args.log_level, args.log_json)
    if args.command == "cluster":
        return _cluster(args)
    daemons = {"manager": _manager, "storage": _storage, "gateway": _gateway}
    try:
        daemon = daemons[args.command](args)
    except ValueError as err:  # a malformed --manager, $DFS_MANAGER or secret file: no traceback, a hint
        return bad_setting(f"dfsd {args.command}", err)
    return _serve(daemon, f"dfsd storage {args.id}" if args.command == "storage" else f"dfsd {args.command}")


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
        help=f"seconds a connection may sit idle between requests, counted once the peer has taken our last answer "
        f"(default {defaults.idle_timeout:g})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout,
        help="seconds a peer may leave undone what it owes: the next byte of the handshake, of a frame or of a request "
        "under way, or taking some of the bytes we send; never timed while it waits for us; also the limit a node "
        f"gives the target of a transfer (default {defaults.request_timeout:g})",
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
                logs.flush()  # os._exit runs no exit handlers
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
        logs.flush()  # what the daemon logged before it failed comes before the error
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
        read_cache=args.read_cache,
    )


def _storage(args: argparse.Namespace) -> Daemon:
    from .storage.node import StorageNode

    security, limits = _settings(args)
    return StorageNode(
        args.id,
        args.data or DEFAULT_DATA / f"node-{args.id}",
        manager_addresses(args.manager),
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


def _gateway(args: argparse.Namespace) -> Daemon:
    from .gateway.server import credentials
    from .gateway.server.daemon import Gateway

    log = structlog.get_logger("dfsd.gateway")
    managers = ",".join(format_address(address) for address in manager_addresses(args.manager))
    try:
        users = credentials.load(args.credentials)
    except credentials.CredentialsError as err:
        raise SystemExit(f"dfsd gateway: {err}") from None
    if not users.users and not args.anonymous:
        raise SystemExit(
            "dfsd gateway: no credentials: give --credentials FILE (TOML [[user]] tables with name, access_key and "
            f"secret_key) or set {credentials.ACCESS_KEY_ENV} and {credentials.SECRET_KEY_ENV}; --anonymous serves "
            "everyone without them"
        )
    if args.anonymous:
        log.warning("anonymous_access", hint="unsigned requests are served as the user 'anonymous'")
    log.info("credentials", users=sorted(user.name for user in users.users.values()))
    security = Security.load(args.secret_file, None, None, args.tls_ca)
    return Gateway(
        args.host,
        args.port,
        managers,
        users,
        anonymous=args.anonymous,
        security=security,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        grace=args.grace,
        domain=args.domain,
        metrics_port=args.metrics_port,
        upload_expiry=args.upload_expiry * 3600,
    )


def _ready(line: str) -> None:
    print(line, flush=True)


def _advertise(text: str | None) -> tuple[str, int | None] | None:
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (text, None)


def _cluster(args: argparse.Namespace) -> int:
    """A manager and ``--nodes`` storage nodes as child processes, each with its own data directory."""
    data: Path = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    log_flags = ["--log-level", args.log_level] + (["--log-json"] if args.log_json else [])
    children: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> str:
        # In a session of its own, so a Ctrl-C reaches only this process, which then stops each child once; its log
        # goes to this terminal.
        child, address = processes.start(processes.dfsd_command(*command, *log_flags), cwd=data, new_session=True)
        children.append(child)
        return address

    # Both stop the cluster, even where SIGINT arrives ignored (a shell's background job inherits it so).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        address = start("manager", "--port", str(args.port), "--db", str(data / "manager.db"))
        for index in range(args.nodes):
            node_id = 100 + index
            start("storage", "--id", str(node_id), "--manager", address, "--data", str(data / f"node-{node_id}"))
        _wait_for_nodes(address, args.nodes)
        gateway_lines = _start_gateway(start, address, data, args.gateway_port) if args.gateway else ""
        manager_flag = "" if address == "127.0.0.1:8000" else f" --manager {address}"
        push, cat, ls = (_command(name) + manager_flag for name in ("dfs-push", "dfs-cat", "dfs-ls"))
        print(
            f"dfsd cluster: manager on {address}, {args.nodes} storage nodes up, data in {data}\n"
            f"In another terminal, store and read back a first file:\n"
            f"  echo hello > hello.txt\n  {push} hello.txt\n  {cat} hello.txt\n  {ls} -l\n"
            f"  {_command('dfsd')} status{manager_flag}\n"
            f"{gateway_lines}"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("dfsd cluster: a process exited on its own; stopping the others", file=sys.stderr)
        return 1
    except (processes.NotReady, TimeoutError) as err:
        print(f"dfsd cluster: {err}; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Nodes first, so they leave the manager cleanly.
        processes.stop(children[::-1], grace=15.0)


def _start_gateway(start: Callable[..., str], manager: str, data: Path, port: int) -> str:
    """Start the cluster's S3 gateway with fresh credentials (kept in DATA, mode 0600); return the lines to print."""
    from .gateway.server import credentials

    path = data / "gateway-credentials.toml"
    user = credentials.generate(path)
    address = start("gateway", "--port", str(port), "--manager", manager, "--credentials", str(path))
    return "".join(f"{line}\n" for line in client_lines(address, user.access_key, user.secret_key, path))


def client_lines(address: str, access_key: str, secret_key: str, credentials_file: Path) -> list[str]:
    """What `dfsd cluster` prints for the S3 gateway at ``address``: aws-cli and rclone lines that work as they are."""
    endpoint = f"http://{address}"
    aws = f"AWS_ACCESS_KEY_ID={access_key} AWS_SECRET_ACCESS_KEY={secret_key} AWS_DEFAULT_REGION=us-east-1"
    rclone = (
        f"RCLONE_S3_PROVIDER=Other RCLONE_S3_ENDPOINT={endpoint} RCLONE_S3_ACCESS_KEY_ID={access_key} "
        f"RCLONE_S3_SECRET_ACCESS_KEY={secret_key}"
    )
    return [
        f"S3 gateway on {endpoint} (credentials in {credentials_file}). With aws-cli:",
        f"  export {aws}",
        f"  aws --endpoint-url {endpoint} s3 mb s3://demo",
        f"  aws --endpoint-url {endpoint} s3 cp hello.txt s3://demo/",
        "With rclone:",
        f"  export {rclone}",
        "  rclone copy hello.txt :s3:demo && rclone ls :s3:demo",
    ]


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
            raise TimeoutError(f"only some of the {count} storage nodes registered within {timeout:g} s")
        time.sleep(0.1)

"""Real dfsd processes on 127.0.0.1 for the integration tests: managers, storage nodes, gateways and the client tools.

A cluster has one manager on a SQLite file in its directory, or (given ``database``) one or more managers sharing a
PostgreSQL database, every storage node then dialing each of them.

Every process is started as ``python -m dfsd ...`` from a temporary directory, on a free port (port 0), and waited for
through the one line it prints when it is listening; nothing sleeps for a guessed time. ``LocalCluster.stop`` kills
whatever is still running, so no test leaves a process behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dfsd import aio, processes
from dfsd.client import Client
from dfsd.manager.store import PostgresURL
from dfsd.settings import Security

# Short liveness settings so tests see a frozen, killed or cut-off node (or manager) go down quickly.
HEARTBEAT = "0.2"
NODE_TIMEOUT = "1.0"
MANAGER_TIMEOUT = "1.0"


def free_port() -> int:
    return processes.free_ports()[0]


def scraped(metrics_port: int, prefix: str) -> dict[str, float]:
    """The metrics named ``prefix...`` of the daemon serving ``metrics_port``, by the rest of their names (counters
    without ``_total``)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return {
        sample.name.removeprefix(prefix).removesuffix("_total"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix) and not sample.name.endswith("_created")
    }


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


def start_daemon(
    args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> Daemon:
    """Start ``dfsd ARGS`` (with ``env`` added to the environment, behind a ``prefix`` command such as
    ``ip netns exec NS``) and wait for its ready line; fail with its log if it dies first."""
    process, address = processes.start(
        [*prefix, *processes.dfsd_command(*args, "--log-level", "info")],
        cwd=cwd,
        log=log,
        env={**os.environ, **(env or {})},
    )
    return Daemon(process, address, log)


@dataclass
class LocalCluster:
    root: Path
    manager: Daemon | None = None  # the first manager
    nodes: dict[int, Daemon] = field(default_factory=dict)
    gateways: list[Daemon] = field(default_factory=list)
    manager_port: int = 0
    env: dict[str, str] = field(default_factory=dict)  # added to every daemon's environment, and to status polls
    security: Security | None = None  # how the test's own status polls connect
    database: PostgresURL | None = None  # a PostgreSQL database the managers share, instead of manager.db
    managers: dict[int, Daemon] = field(default_factory=dict)  # every manager, by its number (the first is 0)
    manager_ports: dict[int, int] = field(default_factory=dict)  # kept across restarts of each manager

    @property
    def address(self) -> str:
        assert self.manager is not None
        return self.manager.address

    @property
    def manager_addresses(self) -> str:
        """Every manager's address, comma-separated, as nodes and tools take them."""
        return ",".join(f"127.0.0.1:{port}" for _, port in sorted(self.manager_ports.items()))

    def start_manager(self, *extra: str, number: int = 0) -> Daemon:
        """Start manager ``number`` (on the port it had before, if it ran before) and wait until it listens."""
        database = self.database.url if self.database is not None else str(self.root / "manager.db")
        port = self.manager_ports.get(number, self.manager_port if number == 0 else 0)
        daemon = start_daemon(
            ["manager", "--port", str(port), "--db", database, "--node-timeout", NODE_TIMEOUT, *extra],
            self.root,
            self.root / ("manager.log" if number == 0 else f"manager-{number}.log"),
            self.env,
        )
        self.managers[number] = daemon
        self.manager_ports[number] = int(daemon.address.rpartition(":")[2])
        if number == 0:
            self.manager = daemon
            self.manager_port = self.manager_ports[0]
        return daemon

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def start_node(self, node_id: int, wait: bool = True, manager: str | None = None, *extra: str) -> Daemon:
        """Start storage node ``node_id`` (talking to ``manager``, default the cluster's) and wait until it is up."""
        self.nodes[node_id] = start_daemon(
            [
                "storage",
                "--id",
                str(node_id),
                "--manager",
                manager or self.manager_addresses,
                "--data",
                str(self.data_dir(node_id)),
                "--heartbeat",
                HEARTBEAT,
                "--manager-timeout",
                MANAGER_TIMEOUT,
                *extra,
            ],
            self.root,
            self.root / f"node-{node_id}.log",
            self.env,
        )
        if wait:
            for number, daemon in self.managers.items():
                if manager is None and daemon.process.poll() is None:
                    self.wait_for(
                        lambda status: any(n.id == node_id and n.up for n in status.nodes),
                        f"node {node_id} up at manager {number}",
                        via=daemon.address,
                    )
        return self.nodes[node_id]

    def wait_for(self, condition, what: str, timeout: float = 15.0, via: str | None = None) -> None:  # type: ignore[no-untyped-def]
        """Poll ``dfsd status`` (of manager ``via``, default the first) until ``condition(status)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            # In a thread of its own, so that async tests (already inside an event loop) can call this too.
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                status = thread.submit(aio.run, _status(via or self.address, self.security)).result()
            if condition(status):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {status}")
            time.sleep(0.05)

    def wait_node_down(self, node_id: int) -> None:
        self.wait_for(lambda status: any(n.id == node_id and not n.up for n in status.nodes), f"node {node_id} down")

    def start_gateway(self, *extra: str, credentials: Path | None = None, env: dict[str, str] | None = None) -> Daemon:
        """Start an S3/REST gateway in front of the manager on a free port (``credentials``: its TOML file)."""
        flags = ["--credentials", str(credentials)] if credentials is not None else []
        gateway = start_daemon(
            ["gateway", "--port", "0", "--manager", self.address, *flags, *extra],
            self.root,
            self.root / f"gateway-{len(self.gateways)}.log",
            {**self.env, **(env or {})},
        )
        self.gateways.append(gateway)
        return gateway

    def stop(self) -> None:
        for daemon in [*self.gateways, *self.nodes.values(), *self.managers.values()]:
            daemon.kill()

    def wait_balanced(self, timeout: float = 60.0) -> None:
        """Until every node is up, no rebalance runs and no two nodes differ by more than one file."""

        def balanced(status) -> bool:  # type: ignore[no-untyped-def]
            counts = [node.files for node in status.nodes]
            return (
                all(node.up for node in status.nodes)
                and not status.rebalance.running
                and max(counts) - min(counts) <= 1
            )

        self.wait_for(balanced, "a balanced cluster", timeout)

    def records(self) -> dict[int, set[int]]:
        """node id -> ids of the files the managers' database places there (read straight from it)."""
        if self.database is not None:
            rows = _query(self.database, "SELECT node, id FROM files")
        else:
            with contextlib.closing(sqlite3.connect(f"file:{self.root / 'manager.db'}?mode=ro", uri=True)) as db:
                rows = db.execute("SELECT node, id FROM files").fetchall()
        placed: dict[int, set[int]] = {node_id: set() for node_id in self.nodes}
        for node_id, file_id in rows:
            placed.setdefault(node_id, set()).add(file_id)
        return placed

    def placed(self) -> dict[int, int]:
        """node id -> files the shared database places there, uploads under way to it included: what placement
        balances (a file is in one of the two tables at any instant: a commit releases its upload's row)."""
        assert self.database is not None, "uploads under way are recorded only in a shared (PostgreSQL) database"
        rows = _query(
            self.database,
            "SELECT node, count(*) FROM (SELECT node FROM files UNION ALL SELECT node FROM uploads) AS placed "
            "GROUP BY node",
        )
        counts = {node_id: 0 for node_id in self.nodes}
        counts.update({int(node_id): int(count) for node_id, count in rows})
        return counts

    def ids_on_disk(self, node_id: int) -> set[int]:
        return {int(path.name.split(".")[1]) for path in self.stored_files(node_id)}

    def wait_no_orphans(self, timeout: float = 15.0) -> None:
        """Until every node's disk holds exactly the files the records place on it, and no partial file."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            on_disk = {node_id: self.ids_on_disk(node_id) for node_id in self.nodes}
            partial = [p for p in self.all_entries() if p.name.endswith(".part")]
            if on_disk == {node_id: records.get(node_id, set()) for node_id in self.nodes} and not partial:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"disks and records differ: disk {on_disk}, records {records}, partial {partial}")
            time.sleep(0.1)

    def partial_files(self, node_id: int | None = None) -> list[Path]:
        """Files being written (``.part``), on every node or on ``node_id``."""
        nodes = self.nodes if node_id is None else [node_id]
        return [path for node in nodes for path in self.data_dir(node).rglob("*.part")]

    async def until_partial(self, node_id: int | None = None, timeout: float = 10.0) -> None:
        """Wait until an upload is under way on a node's disk (a ``.part`` file exists)."""
        async with asyncio.timeout(timeout):
            while not self.partial_files(node_id):
                await asyncio.sleep(0.01)

    def stored_files(self, node_id: int) -> list[Path]:
        """The complete files on a node's disk."""
        return [p for p in self.data_dir(node_id).rglob("*") if p.is_file() and not p.name.endswith(".part")]

    def all_entries(self) -> list[Path]:
        return [p for node_id in self.nodes for p in self.data_dir(node_id).rglob("*")]


def _query(database: PostgresURL, sql: str) -> list[tuple[object, ...]]:
    """The rows of one query on a PostgreSQL database (from a thread of its own, so async tests can call this too)."""

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(database.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


async def _status(address: str, security: Security | None):  # type: ignore[no-untyped-def]
    async with Client(address, security) as client:
        return await client.status()


def run_tool(  # type: ignore[no-untyped-def]
    tool: str,
    *args: str,
    manager: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    prefix: tuple[str, ...] = (),
):
    """Run an installed tool (dfs-push, dfs-cat, dfsd, ...) as its own process, with $DFS_MANAGER pointing at
    ``manager`` (behind a ``prefix`` command such as ``ip netns exec NS``); returns the CompletedProcess."""
    command = Path(sys.executable).parent / tool
    env = {**os.environ, "DFS_MANAGER": manager}
    return subprocess.run(
        [*prefix, str(command), *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=300, check=False
    )


async def stalled(first: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """An upload source that sends ``first``, then nothing more until ``release`` is set (a client stuck mid-upload)."""
    yield first
    await release.wait()
    yield b" and the rest"


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``8m``, ``64k``) mounted at ``mount_point``, to fill a disk for real (needs root; the test
    is skipped otherwise)."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)

"""dfs-bench's processes: the private clusters it measures, the baseline servers and the gateway beside them, and how
they are started, watched and stopped — kept apart from the measuring, which only needs addresses and processes.

Theory of operation. Every process is a ``python -m ...`` child that prints one line ``... listening on HOST:PORT``
once it accepts connections (``dfsd.processes``); it is added to the caller's list the moment it is up, so the caller
stops it whatever happens next. A private cluster is a storage node (id 100) and one or more managers with their
default settings (each request logged at info level to a file), open (no secret, no TLS), on one metadata database:
a SQLite file in the temporary directory, or a PostgreSQL database that several managers share, the node dialing
every one of them (``--manager A,B``). Only the first manager starts with the cluster: every figure labelled with one
manager is measured while it is the only one, since a manager that knows another is up does more work per request
(it counts the files of every node at each upload, ``coordination.py``). The others start (on ports chosen at the
cluster's start, which the node dials from the first) only when the figures of several managers begin
(``Cluster.start_other_managers``). The first cluster is the one every figure is measured on; another (a second
backend) serves only the small-file comparison, in a folder of its own. ``--manager HOST:PORT`` replaces the private
clusters with an existing one, whose processes are not ours to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dfsd import processes
from dfsd.client import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    TLS_CA_ENV,
    Client,
    DfsError,
    Security,
    ServersUnavailable,
    format_address,
    manager_addresses,
)
from dfsd.manager.read_cache import DEFAULT_CAPACITY as DEFAULT_READ_CACHE

# The baseline servers, and the commands timed, run by this Python.
BASELINE = (sys.executable, "-m", "dfsd.tools.bench_baselines")
SINK_FILE = "baseline-sink.bin"

# A dfsd process started for the benchmark gets none of these: its private cluster runs open, over plain TCP.
SECURITY_ENV = (SECRET_ENV, SECRET_FILE_ENV, TLS_CA_ENV)

SQLITE, POSTGRESQL = "sqlite", "postgresql"
BACKEND_NAMES = {SQLITE: "SQLite", POSTGRESQL: "PostgreSQL"}

# The id of a private cluster's one storage node.
NODE_ID = 100


class BenchFailed(Exception):
    """The benchmark itself could not go on: a process did not start or died, or a phase took far too long."""

    hint = "run again with --keep to keep every process's log (in the temporary directory it names)"


@dataclass
class Child:
    """A process started for the benchmark, ready once it printed its one line ``... listening on HOST:PORT``."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @classmethod
    def start(cls, name: str, command: list[str], cwd: Path, env: dict[str, str]) -> Child:
        log = cwd / f"{name}.log"
        try:
            process, address = processes.start(command, cwd=cwd, log=log, env=env)
        except processes.NotReady as err:
            raise BenchFailed(f"{name} did not start: {err}") from None
        return cls(name, process, address, log)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host, int(port)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:].strip()
            raise BenchFailed(f"{self.name} exited with status {self.process.returncode}:\n{tail}")

    def reset_peak_memory(self) -> bool:
        """Restart the kernel's peak-memory count (VmHWM) from the current resident size; False if not allowed."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_memory(self) -> int | None:
        """The peak resident memory, in bytes, since the last reset (or the start); None where /proc cannot say."""
        return peak_memory_of(self.process.pid)


def peak_memory_of(pid: int) -> int | None:
    """A process's peak resident memory (VmHWM), in bytes; None where /proc cannot say (or it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def stop_all(children: Sequence[Child], grace: float = 10.0) -> None:
    """SIGTERM every child at once, then SIGKILL whatever still runs after ``grace`` seconds."""
    processes.stop([child.process for child in children], grace)


@dataclass(frozen=True)
class ClusterPlan:
    """Which private clusters to start: one per backend (the first is measured in full), and how many managers the
    PostgreSQL one runs."""

    backends: tuple[str, ...] = (SQLITE,)
    managers: int = 1
    database: str | None = None  # --db: the PostgreSQL database to use; None: a throwaway server's
    read_cache: int = DEFAULT_READ_CACHE  # each manager's --read-cache, in bytes (0: off)

    @property
    def needs_postgres_server(self) -> bool:
        return POSTGRESQL in self.backends and self.database is None


@dataclass
class Cluster:
    """One cluster measured: its managers' addresses, and its processes when it is a private one."""

    backend: str  # SQLITE, POSTGRESQL, or "existing"
    addresses: list[str]  # each manager, HOST:PORT (those not started yet included)
    database: str  # where its metadata lives, as shown in the report (no password)
    managers: list[Child] = field(default_factory=list)  # those started
    node: Child | None = None
    not_started: list[Callable[[], Child]] = field(default_factory=list)  # start each manager not started yet

    @property
    def name(self) -> str:
        return BACKEND_NAMES.get(self.backend, self.backend)

    def start_other_managers(self) -> list[Child]:
        """Start the managers that wait for the figures of several managers."""
        started = [start() for start in self.not_started]
        self.not_started.clear()
        self.managers += started
        return started

    def describe(self, nodes: int) -> str:
        """One line for the report: what this cluster is (``nodes``: how many storage nodes are up)."""
        if self.node is None:
            return f"existing: the manager at {','.join(self.addresses)}, {nodes} storage node(s) up"
        managers = "a manager" if len(self.addresses) == 1 else f"{len(self.addresses)} managers"
        metadata = "" if self.backend == SQLITE else f", metadata on {self.name} ({self.database})"
        return f"private: {managers} and 1 storage node in a temporary directory, started for this run{metadata}"


@dataclass
class Setup:
    """What one run talks to."""

    address: str  # the first cluster's (first) manager, HOST:PORT: every figure but the comparisons goes through it
    security: Security
    root: Path  # the temporary directory: logs, the large file's copies, the baseline sink's file
    env: dict[str, str]  # the environment of every process started (the commands timed included)
    relay: Child  # the baseline's first hop; its sink writes ``sink_file``
    sink: Child
    echo: Child
    gateway: Child  # ``dfsd gateway`` in front of the manager, with the access key ``gateway_keys``
    gateway_keys: tuple[str, str]
    clusters: list[Cluster]  # the first is measured in full; the others only in the small-file comparisons
    prefix: str = field(default_factory=lambda: f"dfs-bench-{secrets.token_hex(4)}/")  # every name stored starts so

    @property
    def manager(self) -> Child | None:
        """The first cluster's manager; None: an existing cluster, whose processes are not ours to measure."""
        managers = self.clusters[0].managers
        return managers[0] if managers else None

    @property
    def node(self) -> Child | None:
        return self.clusters[0].node

    @property
    def sink_file(self) -> Path:
        return self.root / SINK_FILE

    @property
    def children(self) -> list[Child]:
        ours = [child for cluster in self.clusters for child in (*cluster.managers, cluster.node) if child is not None]
        return [*ours, self.gateway, self.relay, self.sink, self.echo]

    @property
    def bucket(self) -> str:
        """The gateway's bucket: its objects are the dfsd names under ``prefix``."""
        return self.prefix.rstrip("/")


def start_processes(
    root: Path, manager: str | None, plan: ClusterPlan, postgres_url: str | None, children: list[Child]
) -> Setup:
    """Start the baseline servers, and the private clusters unless ``manager`` names an existing one (a PostgreSQL
    cluster on ``postgres_url``); every process started is added to ``children`` at once, so the caller can stop it
    whatever happens next."""
    if manager is None:  # a private cluster runs open; an existing one takes this environment's settings
        env = {key: value for key, value in os.environ.items() if key not in SECURITY_ENV}
    else:
        env = dict(os.environ)

    def start(name: str, *args: str, cwd: Path = root, extra_env: dict[str, str] | None = None) -> Child:
        child = Child.start(name, list(args), cwd, {**env, **(extra_env or {})})
        children.append(child)
        return child

    sink = start("baseline sink", *BASELINE, "sink", "--file", str(root / SINK_FILE))
    relay = start("baseline relay", *BASELINE, "relay", "--to", sink.address)
    echo = start("baseline echo server", *BASELINE, "echo")
    keys = ("DFSBENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24))
    if manager is not None:
        addresses = [format_address(address) for address in manager_addresses(manager)]
        clusters = [Cluster("existing", addresses, "the cluster's own")]
        security = Security.load()
    else:
        clusters = []
        for backend in plan.backends:
            main = not clusters
            directory = root if main else root / backend
            directory.mkdir(exist_ok=True)
            database = str(directory / "manager.db") if backend == SQLITE else postgres_url
            assert database is not None
            managers = plan.managers if backend == POSTGRESQL else 1
            clusters.append(start_cluster(start, backend, directory, database, managers, main, plan.read_cache))
        security = Security()
    gateway = start(
        "dfsd gateway",
        *processes.dfsd_command("gateway", "--port", "0", "--manager", ",".join(clusters[0].addresses)),
        extra_env={"DFS_S3_ACCESS_KEY": keys[0], "DFS_S3_SECRET_KEY": keys[1]},
    )
    address = ",".join(clusters[0].addresses) if manager is not None else clusters[0].addresses[0]
    return Setup(address, security, root, env, relay, sink, echo, gateway, keys, clusters)


def start_cluster(
    start: Callable[..., Child],
    backend: str,
    directory: Path,
    database: str,
    count: int,
    main: bool,
    read_cache: int,
) -> Cluster:
    """``count`` managers on ``database``, each with a read cache of ``read_cache`` bytes: the first started (it
    creates the schema), the others only given a port, to start later (``Cluster.start_other_managers``); then the
    node, dialing them all. Another cluster than the first names its processes after its backend."""
    suffix = "" if main else f" ({BACKEND_NAMES[backend]})"

    def manager(number: int, port: int) -> Callable[[], Child]:
        command = processes.dfsd_command(
            "manager", "--port", str(port), "--db", database, "--read-cache", str(read_cache)
        )
        name = f"dfsd manager{'' if number == 1 else f' {number}'}{suffix}"
        return lambda: start(name, *command, cwd=directory)

    first = manager(1, 0)()
    ports = processes.free_ports(count - 1)
    not_started = [manager(number, port) for number, port in enumerate(ports, start=2)]
    addresses = [first.address, *(f"127.0.0.1:{port}" for port in ports)]
    node = start(
        f"dfsd storage node{suffix}",
        *processes.dfsd_command(
            "storage",
            "--id",
            str(NODE_ID),
            "--manager",
            ",".join(addresses),
            "--data",
            str(directory / f"node-{NODE_ID}"),
        ),
        cwd=directory,
    )
    shown = database if backend == SQLITE else without_password(database)
    return Cluster(backend, addresses, shown, [first], node, not_started)


def without_password(url: str) -> str:
    """A database URL as the report may show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


async def wait_for_nodes(client: Client, setup: Setup) -> int:
    """Until each private cluster's node is up at every one of its managers started (on an existing cluster, until
    any node is); the number of storage nodes up at the first cluster."""
    nodes = await until_node_up(client, setup, NODE_ID if setup.node is not None else None)
    for cluster in setup.clusters:
        await node_up_at(setup, [child.address for child in cluster.managers if child.address != setup.address])
    return nodes


async def start_other_managers(setup: Setup, cluster: Cluster) -> list[str]:
    """Start the managers of ``cluster`` not started yet, and wait until its node is up at each; their names."""
    started = await asyncio.to_thread(cluster.start_other_managers)
    await node_up_at(setup, [child.address for child in started])
    return [child.name for child in started]


async def node_up_at(setup: Setup, addresses: list[str]) -> None:
    """Until a private cluster's node is up at each manager of ``addresses``."""
    for address in addresses:
        async with Client(address, setup.security) as other:
            await until_node_up(other, setup, NODE_ID)


async def until_node_up(client: Client, setup: Setup, node_id: int | None) -> int:
    """Until node ``node_id`` (None: any node) is up at the manager ``client`` talks to; how many nodes are up."""
    deadline = time.monotonic() + processes.READY_TIMEOUT
    while True:
        status = await client.status()
        up = sum(node.up for node in status.nodes)
        if up and (node_id is None or any(node.id == node_id and node.up for node in status.nodes)):
            return up
        if time.monotonic() > deadline:
            raise ServersUnavailable(
                f"servers unavailable: no storage node came up within {processes.READY_TIMEOUT:g} s"
            )
        for child in setup.children:
            child.check_alive()
        await asyncio.sleep(0.05)


async def remove_leftovers(client: Client, prefix: str) -> None:
    """Delete every name under ``prefix`` (what this run stored on an existing cluster), ignoring failures."""
    with contextlib.suppress(DfsError):
        names = [info.name async for info in client.list(prefix)]
        for name in names:
            with contextlib.suppress(DfsError):
                await client.delete(name)

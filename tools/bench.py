"""dfs-bench: how fast dfsd moves large files and answers small ones on this machine, each figure next to a baseline
measured in the same run, so that what matters is the ratio and a busy or noisy machine changes little of it.

Theory of operation. By default the benchmark starts a private cluster in a temporary directory — a manager and one
storage node, as ``python -m dfsd ...`` processes with their default settings (each request logged at info level to a
file), open (no secret, no TLS) — and, beside it, the baseline servers of ``bench_baselines``: a relay and a sink for
streaming, an echo server for round trips. All of them are stopped and the directory removed at the end, whatever
happens. With ``--manager HOST:PORT`` it uses that cluster instead (its processes' memory cannot be measured then), and
deletes whatever it stored there; the baselines still run on this machine.

* Large file: one file of ``--large-size`` bytes (1 GiB), its bytes made from a random 1 MiB block, each copy
  stamped with its index. It goes up through the client library's ``put`` (made on the fly, never held whole) and as
  ``dfs-push FILE`` (from a copy on disk), and comes down through ``get`` (the library checks its SHA-256, the one
  computed from the pattern on the way up) and as ``dfs-cat NAME -o FILE`` (the file is then compared with the
  pattern byte by byte). The commands run as processes, timed from start to exit as a user would see them. Each of the
  four runs right after its baseline (see ``bench_baselines``): the machine's best with no protocol over the same
  three hops and the same disk. Peak resident memory (VmHWM) of the manager and the node is reset before and read
  after each; a command's is read while it runs; the baseline's relay, sink and client stand beside them.
* Small files, the shape of SeaweedFS's ``weed benchmark``: ``-n`` files (20,000) of 1 KiB, then of 64 KiB, written by
  16 concurrent clients (each a ``Client`` with its own connection, each doing its share), read back in random order
  and checked, then deleted in random order: requests per second and the p50/p99 latency of each phase. The baseline
  sends the same number of bare CBOR request/answer frames, with the same payloads and as many connections.

Each dfsd phase runs right after its baseline, so both see the same machine. Ratios are dfsd / baseline: below 1 a rate
is slower than the baseline's; above 1 a latency is longer and memory larger.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from dfsd import processes
from dfsd.client import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    TLS_CA_ENV,
    ChecksumMismatch,
    Client,
    DfsError,
    ProtocolError,
    Security,
    ServersUnavailable,
    format_address,
    manager_addresses,
)
from dfsd.client import run as run_async

from . import bench_baselines as baselines
from . import bench_gateway
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Failures,
    UsageParser,
    add_manager_option,
    format_table,
    human_size,
    say,
)

PROG = "dfs-bench"

DEFAULT_LARGE_SIZE = 1024**3
DEFAULT_FILES = 20_000
QUICK_LARGE_SIZE = 64 * 1024**2
QUICK_FILES = 500
CLIENTS = 16
SMALL_SIZES = (1024, 64 * 1024)

# The large file's bytes come in blocks of this size (the client's chunk size), each stamped with its index.
BLOCK = 1024 * 1024

# How long one phase may take: far beyond any healthy run, so that a hung cluster ends the benchmark with an error
# instead of never. (A started process gets processes.READY_TIMEOUT to say it listens.)
PHASE_TIMEOUT = 900.0

# The baseline servers and clients, and the commands timed, run by this Python.
BASELINE = (sys.executable, "-m", "dfsd.tools.bench_baselines")
DFS_PUSH = (sys.executable, "-m", "dfsd.tools.push")
DFS_CAT = (sys.executable, "-m", "dfsd.tools.cat")
SINK_FILE = "baseline-sink.bin"

# A dfsd process started for the benchmark gets none of these: its private cluster runs open, over plain TCP.
SECURITY_ENV = (SECRET_ENV, SECRET_FILE_ENV, TLS_CA_ENV)

MB = 1_000_000
MiB = 1024 * 1024

W = TypeVar("W")
T = TypeVar("T")

EPILOG = """\
exit status:
  0      success
  1-11   an error from the cluster, as for dfs-push (see its --help); 7 when bytes read back differ from those written
  1      also when a process of the benchmark (a dfsd daemon or a baseline server) does not start or dies
  64     wrong command line
  130    interrupted (Ctrl-C)
"""


class BenchFailed(Exception):
    """The benchmark itself could not go on: a process did not start or died, or a phase took far too long."""

    hint = "run again with --keep to keep every process's log (in the temporary directory it names)"


# --- processes --------------------------------------------------------------------------------------------------------


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


@dataclass
class Setup:
    """What one run talks to."""

    address: str  # the manager, HOST:PORT
    security: Security
    root: Path  # the temporary directory: logs, the large file's copies, the baseline sink's file
    env: dict[str, str]  # the environment of every process started (the commands timed included)
    relay: Child  # the baseline's first hop; its sink writes ``sink_file``
    sink: Child
    echo: Child
    gateway: Child  # ``dfsd gateway`` in front of the manager, with the access key ``gateway_keys``
    gateway_keys: tuple[str, str]
    manager: Child | None = None  # None: an existing cluster, whose processes are not ours to measure
    node: Child | None = None
    prefix: str = field(default_factory=lambda: f"dfs-bench-{secrets.token_hex(4)}/")  # every name stored starts so

    @property
    def sink_file(self) -> Path:
        return self.root / SINK_FILE

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.manager, self.node, self.gateway, self.relay, self.sink, self.echo) if c is not None]

    @property
    def bucket(self) -> str:
        """The gateway's bucket: its objects are the dfsd names under ``prefix``."""
        return self.prefix.rstrip("/")


def start_processes(root: Path, manager: str | None, children: list[Child]) -> Setup:
    """Start the baseline servers, and a private cluster unless ``manager`` names one; every process started is added
    to ``children`` at once, so the caller can stop it whatever happens next."""
    if manager is None:  # a private cluster runs open; an existing one takes this environment's settings
        env = {key: value for key, value in os.environ.items() if key not in SECURITY_ENV}
    else:
        env = dict(os.environ)

    def start(name: str, *args: str) -> Child:
        child = Child.start(name, list(args), root, env)
        children.append(child)
        return child

    sink = start("baseline sink", *BASELINE, "sink", "--file", str(root / SINK_FILE))
    relay = start("baseline relay", *BASELINE, "relay", "--to", sink.address)
    echo = start("baseline echo server", *BASELINE, "echo")
    keys = ("DFSBENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24))

    def start_gateway(address: str) -> Child:
        child = Child.start(
            "dfsd gateway",
            processes.dfsd_command("gateway", "--port", "0", "--manager", address),
            root,
            {**env, "DFS_S3_ACCESS_KEY": keys[0], "DFS_S3_SECRET_KEY": keys[1]},
        )
        children.append(child)
        return child

    if manager is not None:
        addresses = ",".join(format_address(address) for address in manager_addresses(manager))
        gateway = start_gateway(addresses)
        return Setup(addresses, Security.load(), root, env, relay, sink, echo, gateway, keys)
    manager_child = start(
        "dfsd manager", *processes.dfsd_command("manager", "--port", "0", "--db", str(root / "manager.db"))
    )
    node = start(
        "dfsd storage node",
        *processes.dfsd_command(
            "storage", "--id", "100", "--manager", manager_child.address, "--data", str(root / "node-100")
        ),
    )
    gateway = start_gateway(manager_child.address)
    return Setup(manager_child.address, Security(), root, env, relay, sink, echo, gateway, keys, manager_child, node)


# --- measuring --------------------------------------------------------------------------------------------------------


@dataclass
class Timings:
    """One phase: how long it took in all, and each request's latency (seconds)."""

    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile ``q`` (0 < q <= 1) of the latencies, in seconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run_workers(
    workers: Sequence[W], shares: Sequence[Sequence[T]], request: Callable[[W, T], Awaitable[None]]
) -> Timings:
    """Each worker makes its share of requests one after another, all workers at once; every request is timed."""
    latencies: list[float] = []

    async def work(worker: W, share: Sequence[T]) -> None:
        for item in share:
            start = time.perf_counter()
            await request(worker, item)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for worker, share in zip(workers, shares, strict=True):
                group.create_task(work(worker, share))
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None  # the first failure cancelled the others: it is the one to report
    return Timings(time.perf_counter() - start, latencies)


@contextlib.asynccontextmanager
async def phase(what: str, setup: Setup) -> AsyncIterator[None]:
    """A phase must finish within PHASE_TIMEOUT, and a process of ours dying during it is named as the cause."""
    try:
        async with asyncio.timeout(PHASE_TIMEOUT):
            yield
    except TimeoutError:
        raise BenchFailed(f"{what} took more than {PHASE_TIMEOUT:g} s; the processes may be stuck") from None
    except (OSError, EOFError, DfsError):
        for child in setup.children:
            child.check_alive()  # a dead process explains the error better than the error does
        raise


class Pattern:
    """A large file's bytes, made as they are needed and checkable at any offset: block k is k as 8 big-endian bytes
    followed by the rest of one random block, so a block lost, repeated or out of place fails the check."""

    def __init__(self) -> None:
        self._random = os.urandom(BLOCK)

    def block(self, index: int) -> bytes:
        return index.to_bytes(8, "big") + self._random[8:]

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        for index in range(math.ceil(size / BLOCK)):
            block = self.block(index)
            yield block if (index + 1) * BLOCK <= size else block[: size - index * BLOCK]

    def checker(self, size: int, what: str) -> PatternCheck:
        return PatternCheck(self, size, what)


class PatternCheck:
    """Compares the bytes of a download, in whatever pieces they come, with the pattern that was uploaded."""

    def __init__(self, pattern: Pattern, size: int, what: str) -> None:
        self._pattern, self.size, self._what = pattern, size, what
        self.position = 0
        self._index, self._block = -1, b""

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            index, offset = divmod(self.position, BLOCK)
            if index != self._index:
                self._index, self._block = index, self._pattern.block(index)
            take = min(len(view), BLOCK - offset)
            if self.position + take > self.size:
                raise ProtocolError(f"protocol error: {self._what} sent more than the {self.size} bytes uploaded")
            if bytes(view[:take]) != self._block[offset : offset + take]:
                raise ChecksumMismatch(
                    f"checksum mismatch: {self._what} differs from what was uploaded within bytes "
                    f"{self.position}-{self.position + take - 1}"
                )
            self.position += take
            view = view[take:]

    def finish(self) -> None:
        if self.position != self.size:
            raise ProtocolError(f"protocol error: {self._what} sent {self.position} of the {self.size} bytes uploaded")


@dataclass
class Figure:
    key: str  # stable, for scripts: "large.upload", "small.1KiB.read.p99", ...
    label: str
    unit: str
    dfsd: float | None  # None: not measurable here (the memory of a cluster that is not ours)
    baseline: float | None
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        if self.dfsd is None or not self.baseline:
            return None
        return self.dfsd / self.baseline

    def as_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "label": self.label,
            "unit": self.unit,
            "dfsd": None if self.dfsd is None else round(self.dfsd, 4),
            "baseline": None if self.baseline is None else round(self.baseline, 4),
            "ratio": None if ratio is None else round(ratio, 4),
            "better": "higher" if self.higher_is_better else "lower",
        }


@dataclass(frozen=True)
class Plan:
    large_size: int
    files: int
    clients: int
    sizes: tuple[int, ...] = SMALL_SIZES


async def measure(plan: Plan, setup: Setup, note: Callable[[str], None]) -> tuple[list[Figure], int, bool]:
    """Every figure; also the number of storage nodes up, and whether peak memory was reset for each direction."""
    async with Client(setup.address, setup.security) as client:
        nodes = await wait_for_nodes(client, setup)
        note(f"{nodes} storage node(s) up; large file of {human_size(plan.large_size)} first")
        try:
            figures, reset = await large_file(plan, setup, client, note)
            for size in plan.sizes:
                figures += await small_files(plan, setup, size, note)
            figures += await gateway_figures(plan, setup, figures, note)
        finally:
            if setup.manager is None:  # someone else's cluster: take away what this run stored
                await remove_leftovers(client, setup.prefix)
    return figures, nodes, reset


async def wait_for_nodes(client: Client, setup: Setup) -> int:
    """Until the private cluster's node is up (or, on an existing cluster, until any node is)."""
    deadline = time.monotonic() + processes.READY_TIMEOUT
    while True:
        status = await client.status()
        up = sum(node.up for node in status.nodes)
        if up and (setup.node is None or any(node.id == 100 and node.up for node in status.nodes)):
            return up
        if time.monotonic() > deadline:
            raise ServersUnavailable(
                f"servers unavailable: no storage node came up within {processes.READY_TIMEOUT:g} s"
            )
        for child in setup.children:
            child.check_alive()
        await asyncio.sleep(0.05)


async def remove_leftovers(client: Client, prefix: str) -> None:
    with contextlib.suppress(DfsError):
        names = [info.name async for info in client.list(prefix)]
        for name in names:
            with contextlib.suppress(DfsError):
                await client.delete(name)


@dataclass
class Stream:
    """One large-file transfer: how long it took, and the peak resident memory (MiB) of each process on its way,
    by role — "manager", "node", "client" (for a baseline: the relay, the sink, its client process)."""

    seconds: float
    memory: dict[str, float | None]


def peak_memory_mib(child: Child | None) -> float | None:
    peak = child.peak_memory() if child is not None else None
    return None if peak is None else peak / MiB


# How often the peak memory of a command timed is read while it runs. The kernel's count (VmHWM) only grows, so the last
# reading is the peak but for the command's last few milliseconds. (The count wait4 gives after the exit is no use:
# it starts from the benchmark's own size at the fork.)
MEMORY_POLL = 0.01


async def run_command(name: str, command: Sequence[str], setup: Setup) -> tuple[float, float | None]:
    """Run a command to its end, as a user would; its wall-clock seconds and its peak resident memory (MiB). A
    failure, with its standard error, is BenchFailed."""
    log = setup.root / f"{name}.log"
    with open(log, "ab") as stderr:
        started = time.perf_counter()
        process = await asyncio.to_thread(
            subprocess.Popen,
            list(command),
            cwd=setup.root,
            env=setup.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    peak: int | None = None

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = peak_memory_of(process.pid) or peak
            await asyncio.sleep(MEMORY_POLL)

    watcher = asyncio.create_task(watch())
    try:
        status = await asyncio.to_thread(process.wait)
    except BaseException:  # the phase timed out, or Ctrl-C: the command must not outlive the benchmark
        process.kill()
        process.wait()
        raise
    finally:
        watcher.cancel()
    seconds = time.perf_counter() - started
    if status != 0:
        tail = log.read_text(errors="replace")[-2000:].strip()
        raise BenchFailed(f"`{name}` exited with status {status}:\n{tail}")
    return seconds, None if peak is None else peak / MiB


class Memory:
    """Peak memory of the processes a transfer crosses, reset before it; ``reset`` stays True while every reset
    was allowed."""

    def __init__(self) -> None:
        self.reset = True

    def start(self, *children: Child | None) -> None:
        for child in children:
            if child is not None:
                self.reset = child.reset_peak_memory() and self.reset


async def baseline_upload(setup: Setup, memory: Memory, source: Path) -> Stream:
    """The baseline client process sends ``source`` through the relay to the sink, which fsyncs it."""
    async with phase("the baseline upload", setup):
        memory.start(setup.relay, setup.sink)
        seconds, client = await run_command(
            "baseline send", (*BASELINE, "send", "--to", setup.relay.address, str(source)), setup
        )
    return Stream(
        seconds, {"manager": peak_memory_mib(setup.relay), "node": peak_memory_mib(setup.sink), "client": client}
    )


async def baseline_download(setup: Setup, memory: Memory, size: int, output: Path | None) -> Stream:
    """The baseline client process receives ``size`` bytes from the sink through the relay, into ``output`` as
    ``dfs-cat -o`` writes a file (None: dropped, as the client library's ``get`` keeps them in memory)."""
    command = [*BASELINE, "receive", "--to", setup.relay.address, "--length", str(size)]
    if output is not None:
        command += ["--output", str(output)]
    async with phase("the baseline download", setup):
        memory.start(setup.relay, setup.sink)
        seconds, client = await run_command("baseline receive", command, setup)
    if output is not None:
        if output.stat().st_size != size:
            raise BenchFailed(f"the baseline download wrote {output.stat().st_size} of {size} bytes")
        output.unlink()
    return Stream(
        seconds, {"manager": peak_memory_mib(setup.relay), "node": peak_memory_mib(setup.sink), "client": client}
    )


def stream_figures(key: str, label: str, size: int, dfsd: Stream, baseline: Stream) -> list[Figure]:
    """A transfer's rate, then the peak memory of each process dfsd's side measured, each beside the baseline's."""
    figures = [Figure(key, label, "MB/s", size / dfsd.seconds / MB, size / baseline.seconds / MB, True)]
    for role, peak in dfsd.memory.items():
        figures.append(
            Figure(
                f"{key}.{role}_peak_memory", f"{label}: {role} peak memory", "MiB", peak, baseline.memory[role], False
            )
        )
    return figures


def write_pattern(pattern: Pattern, size: int, path: Path) -> None:
    """The large file on disk, for the commands and the baseline's client to send (from the page cache). It is
    fsynced, so that writing it back does not slow the disk under the first upload measured."""
    with open(path, "wb") as file:
        for index in range(math.ceil(size / BLOCK)):
            file.write(pattern.block(index)[: size - index * BLOCK])
        file.flush()
        os.fsync(file.fileno())


def check_pattern_file(pattern: Pattern, size: int, path: Path, what: str) -> None:
    check = pattern.checker(size, what)
    with open(path, "rb") as file:
        while piece := file.read(BLOCK):
            check.feed(piece)
    check.finish()


@dataclass
class LargeFile:
    """What every large-file figure works with: the file (its size, its pattern, its copy on disk for the commands,
    the name it is stored under) and how to reach and measure the processes."""

    setup: Setup
    client: Client
    memory: Memory
    size: int
    name: str
    pattern: Pattern
    source: Path


async def library_upload(large: LargeFile) -> list[Figure]:
    """The client library's ``put`` of the pattern, made as it is sent, beside the baseline's sendfile upload."""
    setup, size, memory = large.setup, large.size, large.memory
    baseline = await baseline_upload(setup, memory, large.source)
    async with phase("the dfsd upload", setup):
        memory.start(setup.manager, setup.node)
        started = time.perf_counter()
        stored = await large.client.put(large.name, large.pattern.chunks(size), size=size)
        seconds = time.perf_counter() - started
        dfsd = Stream(seconds, {"manager": peak_memory_mib(setup.manager), "node": peak_memory_mib(setup.node)})
    if stored.size != size:
        raise ProtocolError(f"protocol error: dfsd stored {stored.size} bytes of the {size} sent")
    return stream_figures("large.upload", f"upload {human_size(size)} (library)", size, dfsd, baseline)


async def command_push(large: LargeFile) -> list[Figure]:
    """``dfs-push FILE`` as a process, beside the baseline's sendfile upload of the same file; what it stored is
    removed again."""
    setup, size, memory, name = large.setup, large.size, large.memory, f"{large.name}-pushed"
    baseline = await baseline_upload(setup, memory, large.source)
    async with phase("dfs-push", setup):
        memory.start(setup.manager, setup.node)
        seconds, peak = await run_command(
            "dfs-push", (*DFS_PUSH, "-q", "--manager", setup.address, "--name", name, str(large.source)), setup
        )
        dfsd = Stream(
            seconds,
            {"manager": peak_memory_mib(setup.manager), "node": peak_memory_mib(setup.node), "client": peak},
        )
    if (await large.client.stat(name)).size != size:
        raise ProtocolError(f"protocol error: dfs-push stored {name} with a size other than the {size} bytes sent")
    await large.client.delete(name)
    return stream_figures("large.push", f"dfs-push {human_size(size)}", size, dfsd, baseline)


async def library_download(large: LargeFile) -> list[Figure]:
    """The client library's ``get``, the bytes counted and dropped (the library checks their SHA-256, which the
    upload computed from the pattern), beside the baseline's download into nowhere."""
    setup, size, memory = large.setup, large.size, large.memory
    baseline = await baseline_download(setup, memory, size, None)
    async with phase("the dfsd download", setup):
        memory.start(setup.manager, setup.node)
        started = time.perf_counter()
        received = 0
        async for chunk in await large.client.get(large.name):
            received += len(chunk)
        seconds = time.perf_counter() - started
        dfsd = Stream(seconds, {"manager": peak_memory_mib(setup.manager), "node": peak_memory_mib(setup.node)})
    if received != size:
        raise ProtocolError(f"protocol error: dfsd sent {received} of the {size} bytes uploaded")
    return stream_figures("large.download", f"download {human_size(size)} (library)", size, dfsd, baseline)


async def command_cat(large: LargeFile) -> list[Figure]:
    """``dfs-cat NAME -o FILE`` as a process, beside the baseline's download written as ``-o`` writes; the file it
    wrote is then compared with the pattern, byte by byte."""
    setup, size, memory = large.setup, large.size, large.memory
    output = setup.root / "large-downloaded.bin"
    baseline = await baseline_download(setup, memory, size, output)
    async with phase("dfs-cat -o", setup):
        memory.start(setup.manager, setup.node)
        seconds, peak = await run_command(
            "dfs-cat", (*DFS_CAT, "-q", "--manager", setup.address, large.name, "-o", str(output)), setup
        )
        dfsd = Stream(
            seconds,
            {"manager": peak_memory_mib(setup.manager), "node": peak_memory_mib(setup.node), "client": peak},
        )
    await asyncio.to_thread(check_pattern_file, large.pattern, size, output, "the file dfs-cat -o wrote")
    output.unlink()
    return stream_figures("large.cat", f"dfs-cat -o {human_size(size)}", size, dfsd, baseline)


# Every large-file figure, in the order measured (each runs its own baseline first): the uploads store the file that
# the downloads read back.
LARGE_FILE_FIGURES: tuple[Callable[[LargeFile], Awaitable[list[Figure]]], ...] = (
    library_upload,
    command_push,
    library_download,
    command_cat,
)


async def large_file(
    plan: Plan, setup: Setup, client: Client, note: Callable[[str], None]
) -> tuple[list[Figure], bool]:
    """A large file up through the library and through dfs-push, and down through the library and dfs-cat -o, each
    right after its baseline; also whether peak memory could be reset before each."""
    source = setup.root / "large-source.bin"
    large = LargeFile(setup, client, Memory(), plan.large_size, f"{setup.prefix}large", Pattern(), source)
    await asyncio.to_thread(write_pattern, large.pattern, large.size, source)
    figures: list[Figure] = []
    try:
        for measure_one in LARGE_FILE_FIGURES:
            new = await measure_one(large)
            note(f"{new[0].label}: baseline {new[0].baseline:.1f} MB/s, dfsd {new[0].dfsd:.1f} MB/s")
            figures += new
        await client.delete(large.name)
    finally:
        source.unlink(missing_ok=True)
        setup.sink_file.unlink(missing_ok=True)
    return figures, large.memory.reset


GATEWAY_SMALL_SIZE = 4096


async def gateway_figures(plan: Plan, setup: Setup, figures: list[Figure], note: Callable[[str], None]) -> list[Figure]:
    """The large file and 4 KiB objects through the gateway, each against the CBOR client's figure of this run."""
    cbor = {figure.key: figure for figure in figures}
    pattern, size = Pattern(), plan.large_size
    gateway = setup.gateway.host_port
    client = await bench_gateway.HttpClient.open(gateway, setup.gateway_keys)
    try:
        await client.expect(200, "PUT", f"/{setup.bucket}")
        async with phase("the gateway upload", setup):
            setup.gateway.reset_peak_memory()
            up = await bench_gateway.timed_put(client, f"/{setup.bucket}/large", pattern.chunks(size), size)
            up_memory = setup.gateway.peak_memory()
        async with phase("the gateway download", setup):
            setup.gateway.reset_peak_memory()
            check = pattern.checker(size, "the gateway")
            started = time.perf_counter()
            status, length = await client.request("GET", f"/{setup.bucket}/large")
            async for chunk in client.body(length):
                check.feed(chunk)
            check.finish()
            if status != 200:
                raise BenchFailed(f"the gateway answered a GET of the large file with {status}")
            down = time.perf_counter() - started
            down_memory = setup.gateway.peak_memory()
        await client.expect(204, "DELETE", f"/{setup.bucket}/large")
        note(f"gateway: upload {size / up / MB:.1f} MB/s, download {size / down / MB:.1f} MB/s")
        label = human_size(size)
        result = [
            Figure(
                "gateway.large.upload",
                f"gateway PUT {label} vs CBOR",
                "MB/s",
                size / up / MB,
                cbor["large.upload"].dfsd,
                True,
            ),
            Figure(
                "gateway.large.download",
                f"gateway GET {label} vs CBOR",
                "MB/s",
                size / down / MB,
                cbor["large.download"].dfsd,
                True,
            ),
        ]
        for direction, peak in (("upload", up_memory), ("download", down_memory)):
            result.append(
                Figure(
                    f"gateway.large.{direction}.peak_memory",
                    f"gateway peak memory, {direction} (vs manager's)",
                    "MiB",
                    None if peak is None else peak / MiB,
                    cbor[f"large.{direction}.manager_peak_memory"].dfsd,
                    False,
                )
            )
        result += await gateway_small(plan, setup, note)
        await client.expect(204, "DELETE", f"/{setup.bucket}")
    finally:
        await client.close()
    return result


async def gateway_small(plan: Plan, setup: Setup, note: Callable[[str], None]) -> list[Figure]:
    """4 KiB objects written and read back by ``plan.clients`` connections: the CBOR client first, then the gateway."""
    size, tag = GATEWAY_SMALL_SIZE, "4KiB"
    base = os.urandom(size)
    order = list(range(plan.files))
    shares = [order[k :: plan.clients] for k in range(plan.clients)]
    cbor_names = [f"{setup.prefix}cbor-{tag}/{index:06d}" for index in order]

    async def cbor_write(client: Client, index: int) -> None:
        await client.put(cbor_names[index], payload(index, size, base))

    async def cbor_read(client: Client, index: int) -> None:
        if await client.read(cbor_names[index]) != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {cbor_names[index]} read back differs")

    async def http_write(client: bench_gateway.HttpClient, index: int) -> None:
        await client.expect(200, "PUT", f"/{setup.bucket}/{tag}/{index:06d}", payload(index, size, base))

    async def http_read(client: bench_gateway.HttpClient, index: int) -> None:
        if await client.expect(200, "GET", f"/{setup.bucket}/{tag}/{index:06d}") != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {tag}/{index:06d} read back through the gateway differs")

    figures: list[Figure] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(setup.address, setup.security)) for _ in range(plan.clients)]
        https = [await bench_gateway.HttpClient.open(setup.gateway.host_port, setup.gateway_keys) for _ in shares]
        for http in https:
            stack.push_async_callback(http.close)
        for what, cbor_request, http_request in (("write", cbor_write, http_write), ("read", cbor_read, http_read)):
            async with phase(f"the CBOR {tag} {what}s", setup):
                cbor_timings = await run_workers(clients, shares, cbor_request)
            async with phase(f"the gateway {tag} {what}s", setup):
                http_timings = await run_workers(https, shares, http_request)
            note(f"{tag} {what}: CBOR {cbor_timings.rate:,.0f}/s, gateway {http_timings.rate:,.0f}/s")
            figures.append(
                Figure(
                    f"gateway.small.{tag}.{what}.rate",
                    f"gateway {tag} {what} vs CBOR",
                    "req/s",
                    http_timings.rate,
                    cbor_timings.rate,
                    True,
                )
            )
        for index in order:
            await clients[0].delete(cbor_names[index])
            await https[0].expect(204, "DELETE", f"/{setup.bucket}/{tag}/{index:06d}")
    return figures


def payload(index: int, size: int, base: bytes) -> bytes:
    """Small file ``index``'s bytes: its index, then the shared random bytes."""
    return index.to_bytes(8, "big") + base[8:size]


async def small_files(plan: Plan, setup: Setup, size: int, note: Callable[[str], None]) -> list[Figure]:
    """Write, read back (random order) and delete ``plan.files`` files of ``size`` bytes, each phase right after the
    same phase against the bare echo server."""
    tag = f"{size // 1024}KiB" if size % 1024 == 0 else f"{size}B"
    base = os.urandom(size)
    names = [f"{setup.prefix}{tag}/{index:06d}" for index in range(plan.files)]
    shuffler = random.Random(secrets.randbits(64))
    in_order = list(range(plan.files))
    orders = {
        "write": in_order,
        "read": shuffler.sample(in_order, plan.files),
        "delete": shuffler.sample(in_order, plan.files),
    }

    def shares(order: list[int]) -> list[list[int]]:
        return [order[k :: plan.clients] for k in range(plan.clients)]

    async def dfsd_write(client: Client, index: int) -> None:
        stored = await client.put(names[index], payload(index, size, base))
        if stored.size != size:
            raise ProtocolError(f"protocol error: dfsd stored {stored.size} bytes of the {size} sent")

    async def dfsd_read(client: Client, index: int) -> None:
        if await client.read(names[index]) != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {names[index]} read back differs from what was written")

    async def dfsd_delete(client: Client, index: int) -> None:
        await client.delete(names[index])

    async def bare_write(bare: baselines.BareClient, index: int) -> None:
        answer = await bare.call({"type": "put", "name": names[index], "data": payload(index, size, base)})
        if answer.get("size") != size:
            raise BenchFailed(f"the echo server answered a write with {answer!r}")

    async def bare_read(bare: baselines.BareClient, index: int) -> None:
        answer = await bare.call({"type": "get", "name": names[index], "length": size})
        if len(answer.get("data", b"")) != size:
            raise BenchFailed("the echo server answered a read with the wrong number of bytes")

    async def bare_delete(bare: baselines.BareClient, index: int) -> None:
        await bare.call({"type": "delete", "name": names[index]})

    requests: dict[str, tuple[Callable[[Client, int], Awaitable[None]], Callable[[Any, int], Awaitable[None]]]] = {
        "write": (dfsd_write, bare_write),
        "read": (dfsd_read, bare_read),
        "delete": (dfsd_delete, bare_delete),
    }
    figures: list[Figure] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(setup.address, setup.security)) for _ in range(plan.clients)]
        bares = [await baselines.BareClient.open(setup.echo.host_port) for _ in range(plan.clients)]
        for bare in bares:
            stack.push_async_callback(bare.close)
        for what, (dfsd_request, bare_request) in requests.items():
            order = shares(orders[what])
            async with phase(f"the baseline {tag} {what}s", setup):
                base_timings = await run_workers(bares, order, bare_request)
            async with phase(f"the dfsd {tag} {what}s", setup):
                dfsd_timings = await run_workers(clients, order, dfsd_request)
            note(
                f"{human_size(size)} {what}: baseline {base_timings.rate:,.0f}/s, dfsd {dfsd_timings.rate:,.0f}/s "
                f"(p99 {dfsd_timings.percentile(0.99) * 1000:.2f} ms)"
            )
            label = f"{human_size(size)} {what}"
            key = f"small.{tag}.{what}"
            if what == "write":
                async with phase(f"the baseline's {tag} durable creates", setup):
                    disk = Timings(
                        *await asyncio.to_thread(
                            baselines.durable_creates,
                            setup.root / f"baseline-creates-{tag}",
                            [payload(index, size, base) for index in range(plan.files)],
                            plan.clients,
                        )
                    )
                note(f"{human_size(size)} durable creates on this disk: {disk.rate:,.0f}/s")
                figures.append(
                    Figure(
                        f"{key}.disk", f"{label} vs disk's durable creates", "req/s", dfsd_timings.rate, disk.rate, True
                    )
                )
            figures += [
                Figure(f"{key}.rate", label, "req/s", dfsd_timings.rate, base_timings.rate, True),
                *(
                    Figure(
                        f"{key}.{name}",
                        f"{label}, {name} latency",
                        "ms",
                        dfsd_timings.percentile(fraction) * 1000,
                        base_timings.percentile(fraction) * 1000,
                        False,
                    )
                    for name, fraction in (("p50", 0.5), ("p99", 0.99))
                ),
            ]
    return figures


# --- the report -------------------------------------------------------------------------------------------------------


def cpu_count() -> int:
    """The CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(
    plan: Plan, manager: str | None, parent: Path | None, keep: bool, note: Callable[[str], None]
) -> dict[str, Any]:
    """Start what is needed, measure, stop everything and remove the temporary directory (unless ``keep``); the
    report as a dict."""
    date = datetime.now(UTC)
    started = time.monotonic()
    children: list[Child] = []
    root = Path(tempfile.mkdtemp(prefix="dfs-bench-", dir=parent))
    try:
        setup = start_processes(root, manager, children)
        note(f"started {', '.join(child.name for child in children)} in {root}")
        figures, nodes, reset = run_async(measure(plan, setup, note))
    finally:
        stop_all(children)
        if keep:
            note(f"kept {root} (the processes' logs, the manager's database, the node's data)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if manager is None:
        cluster = "private: a manager and 1 storage node in a temporary directory, started for this run"
    else:
        cluster = f"existing: the manager at {setup.address}, {nodes} storage node(s) up"
    return {
        "machine": {
            "cpus": cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(terse=True),
            "date": date.isoformat(timespec="seconds"),
        },
        "dfsd": importlib.metadata.version("dfsd"),
        "cluster": cluster,
        "settings": {"large_size": plan.large_size, "files": plan.files, "clients": plan.clients, "sizes": plan.sizes},
        "peak_memory": "per direction" if reset else "since each process started (the kernel refused a reset)",
        "seconds": round(time.monotonic() - started, 1),
        "figures": {figure.key: figure.as_json() for figure in figures},
    }


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
        "disk and fsyncing it at the end (and back: the sink sendfiles, the client drops the bytes, or for dfs-cat -o "
        "writes a temporary file renamed into place, as -o does); large socket buffers. Its memory figures are the "
        "relay's (beside the manager), the sink's (beside the node) and its client's (beside dfs-push's and "
        "dfs-cat's); dfs-push, dfs-cat and the baseline's client are timed as processes, start-up included. "
        f"For small files, bare CBOR request/answer frames over loopback, "
        f"{settings['clients']} connections, one hop, the same payloads, nothing stored. "
        "Gateway rows: the same work through dfsd gateway (S3 over HTTP, one keep-alive connection per client), "
        "against the CBOR client's figure of this run (memory: against the manager's). "
        "Ratio = dfsd / baseline: for rates, below 1 is slower; for latencies and memory, above 1 is more. "
        f"Peak memory: {report['peak_memory']}."
    )
    return [
        f"dfs-bench {when}: {machine['cpus']} CPUs, {machine['python']}, {machine['platform']}, dfsd {report['dfsd']}",
        f"cluster: {report['cluster']}",
        f"large file: {human_size(settings['large_size'])} up and down; small files: {settings['files']:,} of each "
        f"size, {settings['clients']} clients, read back and deleted in random order",
        f"run time: {report['seconds']:g} s",
        "",
        *format_table(("FIGURE", "UNIT", "DFSD", "BASELINE", "DFSD/BASELINE"), rows, (False, False, True, True, True)),
        "",
        *textwrap.wrap(notes, 120),
    ]


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


def parse_size(text: str) -> int:
    """A byte count: ``1073741824``, ``1G``, ``64M``, ``512K`` (binary multiples; an optional ``iB``/``B`` suffix)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = 1
    if value and value[-1] in "KMG":
        scale = 1024 ** ("KMG".index(value[-1]) + 1)
        value = value[:-1]
    try:
        size = int(float(value) * scale)
    except (ValueError, OverflowError):  # not a number; infinity
        raise ValueError(f"{text!r} is not a size (e.g. 1G, 64M, 4096)") from None
    if size < 1:
        raise ValueError(f"{text!r}: a size must be at least 1 byte")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(
        prog=PROG,
        description="Measure dfsd on this machine next to baselines run alongside: one large file up and down "
        "(MB/s, peak memory), then many small files written, read and deleted by concurrent clients (requests/s, "
        "p50/p99 latency). Starts a private cluster (a manager and one storage node) in a temporary directory unless "
        "--manager names one.",
        epilog=EPILOG,
    )
    add_manager_option(parser, help="benchmark this existing cluster instead of starting a private one")
    parser.add_argument("-n", "--files", type=int, help=f"small files of each size (default {DEFAULT_FILES:,})")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"concurrent clients for small files ({CLIENTS})")
    parser.add_argument(
        "--large-size", metavar="SIZE", help="the large file's size, e.g. 1G, 256M (default 1G; --quick: 64M)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a small run of seconds: {QUICK_FILES} files, a 64 MiB large file"
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
        report = run(plan, args.manager, args.dir, args.keep, note)
    except DfsError as err:
        return failures.error(err)
    except BenchFailed as err:
        return failures.add(1, str(err), err.hint)
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

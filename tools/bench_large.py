"""dfs-bench's large-file figures: one file of ``--large-size`` bytes up and down, through the client library and as
the commands users run, each right after its baseline, with the peak memory of every process on the way.

Theory of operation. The file's bytes come from a ``Pattern``, made as they are needed and checkable at any offset, so
no process ever holds the whole file and every byte read back is compared with what went up. It goes up through the
client library's ``put`` (made on the fly) and as ``dfs-push FILE`` (from a copy on disk), and comes down through
``get`` (the library checks its SHA-256, the one computed from the pattern on the way up) and as ``dfs-cat NAME -o
FILE`` (the file is then compared with the pattern byte by byte). The commands run as processes, timed from start to
exit as a user would see them. Each of the four runs right after its baseline (see ``bench_baselines``): the machine's
best with no protocol over the same three hops and the same disk; the two commands also beside a baseline that hashes
the bytes as they must (SHA-256: both ends of an upload, the client of a download), an informative second row. Peak
resident memory (VmHWM) of the manager and the node is reset before and read after each; a command's is read while it
runs; the baseline's relay, sink and client stand beside them.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dfsd.client import ChecksumMismatch, Client, ProtocolError

from .bench_cluster import BASELINE, BenchFailed, Child, Setup, peak_memory_of
from .bench_measure import MB, Figure, MiB, Plan, phase
from .common import human_size

# The large file's bytes come in blocks of this size (the client's chunk size), each stamped with its index.
BLOCK = 1024 * 1024
STAMP = 8  # bytes of a block's index at its start

# The commands timed, run by this Python.
DFS_PUSH = (sys.executable, "-m", "dfsd.tools.push")
DFS_CAT = (sys.executable, "-m", "dfsd.tools.cat")


class Pattern:
    """A large file's bytes, made as they are needed and checkable at any offset: block k is k as 8 big-endian bytes
    followed by the rest of one random block, so a block lost, repeated or out of place fails the check."""

    def __init__(self) -> None:
        self._random = os.urandom(BLOCK)

    def block(self, index: int) -> bytes:
        return index.to_bytes(STAMP, "big") + self._random[STAMP:]

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        for index in range(math.ceil(size / BLOCK)):
            block = self.block(index)
            yield block if (index + 1) * BLOCK <= size else block[: size - index * BLOCK]

    def matches(self, index: int, offset: int, piece: memoryview) -> bool:
        """Whether ``piece`` is block ``index``'s bytes from ``offset`` on (within the block)."""
        stamp = STAMP - offset
        if stamp > 0:  # the piece starts in the block's stamp
            if not index.to_bytes(STAMP, "big").startswith(piece[:stamp], offset):
                return False
            piece, offset = piece[stamp:], STAMP
        return self._random.startswith(piece, offset)

    def checker(self, size: int, what: str) -> PatternCheck:
        return PatternCheck(self, size, what)


class PatternCheck:
    """Compares the bytes of a download, in whatever pieces they come, with the pattern that was uploaded.

    Each piece is compared where it lies (``bytes.startswith`` at an offset, a memcmp) with no block made and no
    byte copied: the gateway's GET checks as it reads, inside its timing, where copying each piece and each block
    cost its client 0.42 s of CPU per GiB (measured), on the cores the gateway shares with it; 0.02 s now."""

    def __init__(self, pattern: Pattern, size: int, what: str) -> None:
        self._pattern, self.size, self._what = pattern, size, what
        self.position = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            index, offset = divmod(self.position, BLOCK)
            take = min(len(view), BLOCK - offset)
            if self.position + take > self.size:
                raise ProtocolError(f"protocol error: {self._what} sent more than the {self.size} bytes uploaded")
            if not self._pattern.matches(index, offset, view[:take]):
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


async def baseline_upload(setup: Setup, memory: Memory, source: Path, sha256: bool = False) -> Stream:
    """The baseline client process sends ``source`` through the relay to the sink, which fsyncs it; with ``sha256``,
    both ends hashing the bytes too, and the sink checking them against the client's digest."""
    command = [*BASELINE, "send", "--to", setup.relay.address, str(source)]
    if sha256:
        command.append("--sha256")
    async with phase("the hashing baseline upload" if sha256 else "the baseline upload", setup):
        memory.start(setup.relay, setup.sink)
        seconds, client = await run_command("baseline send", command, setup)
    return Stream(
        seconds, {"manager": peak_memory_mib(setup.relay), "node": peak_memory_mib(setup.sink), "client": client}
    )


async def baseline_download(
    setup: Setup, memory: Memory, size: int, output: Path | None, sha256: bool = False
) -> Stream:
    """The baseline client process receives ``size`` bytes from the sink through the relay, into ``output`` as
    ``dfs-cat -o`` writes a file (None: dropped, as the client library's ``get`` keeps them in memory); with
    ``sha256``, hashing them too. The sink wrote its file around the page cache; it is read once first, untimed, so
    that the timed download is served from memory, the fastest a download can be (dfsd's node reads from the disk)."""
    command = [*BASELINE, "receive", "--to", setup.relay.address, "--length", str(size)]
    async with phase("reading the baseline's file into the page cache", setup):
        await run_command("baseline receive", command, setup)
    if output is not None:
        command += ["--output", str(output)]
    if sha256:
        command.append("--sha256")
    async with phase("the hashing baseline download" if sha256 else "the baseline download", setup):
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
    removed again. A second, informative row sets it beside a baseline whose two ends also hash the bytes (SHA-256,
    the end-to-end check dfs-push and the node must make): what is left between the two is the protocol's cost."""
    setup, size, memory, name = large.setup, large.size, large.memory, f"{large.name}-pushed"
    baseline = await baseline_upload(setup, memory, large.source)
    hashing = await baseline_upload(setup, memory, large.source, sha256=True)
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
    label = f"dfs-push {human_size(size)}"
    return [
        *stream_figures("large.push", label, size, dfsd, baseline),
        hashing_figure("large.push", label, dfsd, hashing, size),
    ]


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
    wrote is then compared with the pattern, byte by byte. A second, informative row sets it beside a baseline that
    also hashes what it receives (SHA-256, as dfs-cat must): what is left between the two is the protocol's cost."""
    setup, size, memory = large.setup, large.size, large.memory
    output = setup.root / "large-downloaded.bin"
    baseline = await baseline_download(setup, memory, size, output)
    hashing = await baseline_download(setup, memory, size, output, sha256=True)
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
    label = f"dfs-cat -o {human_size(size)}"
    return [
        *stream_figures("large.cat", label, size, dfsd, baseline),
        hashing_figure("large.cat", label, dfsd, hashing, size),
    ]


def hashing_figure(key: str, label: str, dfsd: Stream, hashing: Stream, size: int) -> Figure:
    """A command's rate beside a baseline that hashes its bytes too, as the command must (informative)."""
    rate, hashing_rate = size / dfsd.seconds / MB, size / hashing.seconds / MB
    return Figure(f"{key}.hashing_baseline", f"{label} (baseline hashes)", "MB/s", rate, hashing_rate, True)


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

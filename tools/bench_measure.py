"""What every dfs-bench measurement rests on: the plan of a run, a phase with a deadline, workers timed request by
request, and a figure beside its baseline — shared by the large-file, small-file and gateway measurements, so each of
those is only what it measures.

A phase must end within PHASE_TIMEOUT, far beyond any healthy run, so that a hung cluster ends the benchmark with an
error instead of never; when a request fails, a process of the run that died is named as the cause, since that
explains the error better than the error does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dfsd.client import DfsError

from .bench_cluster import BenchFailed, Setup

SMALL_SIZES = (1024, 64 * 1024)

# How long one phase may take. (A started process gets processes.READY_TIMEOUT to say it listens.)
PHASE_TIMEOUT = 900.0

MB = 1_000_000
MiB = 1024 * 1024

W = TypeVar("W")
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    large_size: int
    files: int
    clients: int
    sizes: tuple[int, ...] = SMALL_SIZES
    large_only: bool = False  # the large-file figures alone (``--large-only``): no small files, no gateway


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

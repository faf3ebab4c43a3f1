"""dfs-bench's small-file figures, the shape of SeaweedFS's ``weed benchmark``: many small files written, read back in
random order and checked, then deleted in random order by concurrent clients; requests per second and the p50/p99
latency of each phase.

Theory of operation. ``-n`` files of each size are written by ``--clients`` clients (each a ``Client`` with its own
connection, each doing its share). Each phase runs right after the same phase against the bare echo server of
``bench_baselines`` (the same number of CBOR request/answer frames, the same payloads, as many connections), and the
write phase is also set beside the disk's durable creates. Where the run has more than one way to serve the same
requests — a second metadata backend, or several managers on one PostgreSQL database — each is a ``Target`` measured
in the same phase, right after the first, with 1 KiB files (COMPARED_SIZE): its baseline is not the echo server but
the figure it is an alternative to (PostgreSQL's against SQLite's; N managers' aggregate, the clients spread evenly
over them, against one manager serving all the clients). Each target writes, reads and deletes names of its own.
The targets of several managers come last, each with its three phases in a row: only then are the other managers
started (``bench_cluster``), so that every figure of one manager is measured with that manager alone. It also keeps
their writes out of that manager's read cache between its own writes and reads: run in between, with 20,000 files,
they had pushed 8,931 of its 20,000 reads out of the cache (least recently used first: its own files were the oldest).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dfsd.client import ChecksumMismatch, Client, ProtocolError

from . import bench_baselines as baselines
from .bench_cluster import BenchFailed, Cluster, Setup, start_other_managers
from .bench_measure import Figure, Plan, Timings, phase, run_workers
from .common import human_size

PHASES = ("write", "read", "delete")

# The size the backend and manager comparisons are measured at: issue 12's targets are set on 1 KiB files.
COMPARED_SIZE = 1024


@dataclass(eq=False)
class Target:
    """Managers a phase's clients are spread over (client k talks to ``addresses[k % len]``), and what its figures
    are set beside: ``versus``'s figure of the same phase, or (None) the echo server and the disk."""

    key: str  # the start of its figures' keys ("": the first cluster's own, "small.1KiB...")
    label: str  # the end of its figures' labels
    addresses: list[str]
    versus: Target | None = None
    starts: Cluster | None = None  # the cluster whose managers not started yet must start before its phases

    def figure_key(self, rest: str) -> str:
        return f"{self.key}.{rest}" if self.key else rest


def targets_of(setup: Setup) -> list[Target]:
    """The first cluster's first manager, then every other cluster's first manager (against it), then each cluster
    with several managers, all of them at once (against its first manager alone)."""
    first = Target("", "", [setup.address])
    found = [first]
    for cluster in setup.clusters:
        if cluster is setup.clusters[0]:
            one = first
        else:
            one = Target(
                cluster.backend, f" on {cluster.name} vs {setup.clusters[0].name}", cluster.addresses[:1], first
            )
            found.append(one)
        if len(cluster.addresses) > 1:
            count = len(cluster.addresses)
            key, label = f"{cluster.backend}.{count}-managers", f" via {count} managers vs 1"
            found.append(Target(key, label, cluster.addresses, one, cluster))
    return found


def payload(index: int, size: int, base: bytes) -> bytes:
    """Small file ``index``'s bytes: its index, then the shared random bytes."""
    return index.to_bytes(8, "big") + base[8:size]


Request = Callable[[Any, int], Awaitable[None]]


def dfsd_requests(names: list[str], size: int, base: bytes) -> dict[str, Request]:
    """A client's write, read (checked) and delete of small file ``index``."""

    async def write(client: Client, index: int) -> None:
        stored = await client.put(names[index], payload(index, size, base))
        if stored.size != size:
            raise ProtocolError(f"protocol error: dfsd stored {stored.size} bytes of the {size} sent")

    async def read(client: Client, index: int) -> None:
        if await client.read(names[index]) != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {names[index]} read back differs from what was written")

    async def delete(client: Client, index: int) -> None:
        await client.delete(names[index])

    return {"write": write, "read": read, "delete": delete}


def bare_requests(names: list[str], size: int, base: bytes) -> dict[str, Request]:
    """The same requests as bare frames to the echo server, which stores nothing."""

    async def write(bare: baselines.BareClient, index: int) -> None:
        answer = await bare.call({"type": "put", "name": names[index], "data": payload(index, size, base)})
        if answer.get("size") != size:
            raise BenchFailed(f"the echo server answered a write with {answer!r}")

    async def read(bare: baselines.BareClient, index: int) -> None:
        answer = await bare.call({"type": "get", "name": names[index], "length": size})
        if len(answer.get("data", b"")) != size:
            raise BenchFailed("the echo server answered a read with the wrong number of bytes")

    async def delete(bare: baselines.BareClient, index: int) -> None:
        await bare.call({"type": "delete", "name": names[index]})

    return {"write": write, "read": read, "delete": delete}


def phase_figures(target: Target, tag: str, label: str, what: str, measured: Timings, versus: Timings) -> list[Figure]:
    """A phase's rate, p50 and p99, each beside ``versus``'s."""
    key = target.figure_key(f"small.{tag}.{what}")
    return [
        Figure(f"{key}.rate", f"{label}{target.label}", "req/s", measured.rate, versus.rate, True),
        *(
            Figure(
                f"{key}.{name}",
                f"{label}, {name} latency{target.label}",
                "ms",
                measured.percentile(fraction) * 1000,
                versus.percentile(fraction) * 1000,
                False,
            )
            for name, fraction in (("p50", 0.5), ("p99", 0.99))
        ),
    ]


async def durable_creates(plan: Plan, setup: Setup, size: int, tag: str, base: bytes) -> Timings:
    """The disk's part of a write: as many files created durably, by as many threads, with nothing else."""
    async with phase(f"the baseline's {tag} durable creates", setup):
        return Timings(
            *await asyncio.to_thread(
                baselines.durable_creates,
                setup.root / f"baseline-creates-{tag}",
                [payload(index, size, base) for index in range(plan.files)],
                plan.clients,
            )
        )


async def small_files(
    plan: Plan, setup: Setup, size: int, targets: list[Target], note: Callable[[str], None]
) -> list[Figure]:
    """Write, read back (random order) and delete ``plan.files`` files of ``size`` bytes, each phase right after the
    same phase against the bare echo server; at COMPARED_SIZE, every other target's same phase right after, then
    each target of several managers' three phases, once its managers are started."""
    tag = f"{size // 1024}KiB" if size % 1024 == 0 else f"{size}B"
    label = human_size(size)
    base = os.urandom(size)
    first = targets[0]
    measured_here = targets if size == COMPARED_SIZE else [first]
    shuffler = random.Random(secrets.randbits(64))
    in_order = list(range(plan.files))
    orders = {
        "write": in_order,
        "read": shuffler.sample(in_order, plan.files),
        "delete": shuffler.sample(in_order, plan.files),
    }

    def shares(order: list[int]) -> list[list[int]]:
        return [order[k :: plan.clients] for k in range(plan.clients)]

    def names(target: Target) -> list[str]:
        folder = f"{target.key}/{tag}" if target.key else tag
        return [f"{setup.prefix}{folder}/{index:06d}" for index in range(plan.files)]

    requests = {target: dfsd_requests(names(target), size, base) for target in measured_here}
    bare = bare_requests(names(first), size, base)
    measured: dict[tuple[Target, str], Timings] = {}  # each target's phases, for those set beside them
    echoed: dict[str, Timings] = {}  # the echo server's phases, beside the first target's
    figures: list[Figure] = []

    async def measure_group(group: list[Target]) -> None:
        """The phases of ``group``'s targets, each phase of each target in turn; the first target's (if there)
        right after the echo server's."""
        async with contextlib.AsyncExitStack() as stack:
            clients = {
                target: [
                    await stack.enter_async_context(Client(target.addresses[k % len(target.addresses)], setup.security))
                    for k in range(plan.clients)
                ]
                for target in group
            }
            bares = [
                await baselines.BareClient.open(setup.echo.host_port)
                for _ in range(plan.clients if first in group else 0)
            ]
            for bare_client in bares:
                stack.push_async_callback(bare_client.close)
            for what in PHASES:
                order = shares(orders[what])
                if first in group:
                    async with phase(f"the baseline {tag} {what}s", setup):
                        echoed[what] = await run_workers(bares, order, bare[what])
                for target in group:
                    async with phase(f"the dfsd {tag} {what}s{target.label}", setup):
                        timings = measured[target, what] = await run_workers(
                            clients[target], order, requests[target][what]
                        )
                    await record(target, what, timings)

    async def record(target: Target, what: str, timings: Timings) -> None:
        """Say and keep ``target``'s figures of phase ``what`` (and, for the first, the disk's beside its writes)."""
        p99 = f"p99 {timings.percentile(0.99) * 1000:.2f} ms"
        versus = echoed[what] if target.versus is None else measured[target.versus, what]
        if target is first:
            note(f"{label} {what}: baseline {versus.rate:,.0f}/s, dfsd {timings.rate:,.0f}/s ({p99})")
        else:
            note(f"{label} {what}{target.label}: {timings.rate:,.0f}/s ({p99})")
        if target is first and what == "write":
            disk = await durable_creates(plan, setup, size, tag, base)
            note(f"{label} durable creates on this disk: {disk.rate:,.0f}/s")
            figures.append(
                Figure(
                    f"small.{tag}.write.disk",
                    f"{label} write vs disk's durable creates",
                    "req/s",
                    timings.rate,
                    disk.rate,
                    True,
                )
            )
        figures.extend(phase_figures(target, tag, f"{label} {what}", what, timings, versus))

    await measure_group([target for target in measured_here if target.starts is None])
    for target in measured_here:
        if target.starts is not None:
            started = await start_other_managers(setup, target.starts)
            note(f"started {', '.join(started)} for the figures{target.label}")
            await measure_group([target])
    return figures

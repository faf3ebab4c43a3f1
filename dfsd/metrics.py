"""Prometheus metrics, served over HTTP on ``--metrics-port`` (prometheus_client, in a thread of its own).

Counters and histograms are updated where things happen (a request answered, bytes read or written, a move made);
the cluster's shape (nodes up and down, files and bytes per node, lost files) is read from the manager's own state at
scrape time by ``ClusterCollector``, so it can never drift from what ``dfsd status`` shows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any, Protocol

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from . import traffic

REQUESTS = Counter("dfsd_requests", "Requests answered, by operation and outcome", ["op", "outcome"])
LATENCY = Histogram(
    "dfsd_request_seconds",
    "Time from a request's first frame to its answer",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class TrafficCollector(Collector):
    """``traffic.BYTES``, the bytes every connection received and sent, shown as the counter
    ``dfsd_bytes_total{direction}`` when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("dfsd_bytes", "Bytes received from and sent to peers", labels=["direction"])
        family.add_metric(["in"], traffic.BYTES.received)
        family.add_metric(["out"], traffic.BYTES.sent)
        yield family


REGISTRY.register(TrafficCollector())


@functools.cache
def answered(op: str, outcome: str) -> Counter:
    """The count of requests ``op`` answered with ``outcome``, looked up once: ``labels`` takes a lock and builds a
    key on every call, a cost every request paid twice."""
    return REQUESTS.labels(op, outcome)


@functools.cache
def latency_of(op: str) -> Histogram:
    """The latency histogram of requests ``op``, looked up once (see ``answered``)."""
    return LATENCY.labels(op)


MOVES = Counter("dfsd_rebalance_moves", "Files moved between nodes by the rebalancer, by outcome", ["outcome"])
ORPHANS = Counter("dfsd_orphans_removed", "Files removed from nodes because no record named them")


def serve(host: str, port: int) -> int:
    """Serve /metrics on ``host``:``port`` (0: a free port); return the port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


class ClusterCollector(Collector):
    """Gauges read from the manager's topology when Prometheus scrapes (``nodes`` returns a snapshot)."""

    def __init__(self, nodes: Callable[[], list[Any]], lost: Callable[[], int]) -> None:
        self._nodes = nodes
        self._lost = lost

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nodes = self._nodes()
        state = GaugeMetricFamily("dfsd_nodes", "Storage nodes the manager knows, by state", labels=["state"])
        state.add_metric(["up"], sum(1 for node in nodes if node.up))
        state.add_metric(["down"], sum(1 for node in nodes if not node.up))
        files = GaugeMetricFamily("dfsd_node_files", "Files the manager has placed on each node", labels=["node"])
        used = GaugeMetricFamily("dfsd_node_bytes", "Bytes of those files", labels=["node"])
        free = GaugeMetricFamily("dfsd_node_free_bytes", "Free disk space each node last reported", labels=["node"])
        for node in nodes:
            files.add_metric([str(node.id)], node.files)
            used.add_metric([str(node.id)], node.used)
            free.add_metric([str(node.id)], node.free)
        lost = GaugeMetricFamily("dfsd_lost_files", "Files whose node no longer has their bytes")
        lost.add_metric([], self._lost())
        yield from (state, files, used, free, lost)


def watch_cluster(nodes: Callable[[], list[Any]], lost: Callable[[], int]) -> None:
    REGISTRY.register(ClusterCollector(nodes, lost))


class CacheCounts(Protocol):
    """What the read cache counts (``dfsd.manager.read_cache.ReadCache``)."""

    capacity: int
    used: int
    hits: int
    misses: int

    def __len__(self) -> int: ...


# A family read at scrape time: its kind, name and help, and how it is read from its source.
Reading = tuple[type[CounterMetricFamily] | type[GaugeMetricFamily], str, str, Callable[[Any], float]]


class ReadAtScrape(Collector):
    """Plain counters of an object (a cache), read when Prometheus scrapes: they change on every read, too often to
    keep metric objects up to date as they go. ``readings``: each family's kind, name, help and how to read it."""

    def __init__(self, source: object, readings: Sequence[Reading]) -> None:
        self._source = source
        self._readings = readings

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for family, name, documentation, read in self._readings:
            yield family(name, documentation, read(self._source))


READ_CACHE_READINGS: list[Reading] = [
    (CounterMetricFamily, "dfsd_read_cache_hits", "Small-file reads answered from the read cache", attrgetter("hits")),
    (
        CounterMetricFamily,
        "dfsd_read_cache_misses",
        "Small-file reads the read cache could not answer (relayed from the node)",
        attrgetter("misses"),
    ),
    (
        GaugeMetricFamily,
        "dfsd_read_cache_bytes",
        "Memory the read cache's entries take, as it counts it",
        attrgetter("used"),
    ),
    (GaugeMetricFamily, "dfsd_read_cache_files", "Files held in the read cache", len),
    (
        GaugeMetricFamily,
        "dfsd_read_cache_capacity_bytes",
        "The read cache's bound (--read-cache)",
        attrgetter("capacity"),
    ),
]

# The names a manager alone on a PostgreSQL database keeps in memory (``name_cache.py``).
NAME_CACHE_READINGS: list[Reading] = [
    (
        CounterMetricFamily,
        "dfsd_name_cache_hits",
        "Names found in memory, asking the database nothing",
        attrgetter("hits"),
    ),
    (CounterMetricFamily, "dfsd_name_cache_misses", "Names looked up in the metadata database", attrgetter("misses")),
    (GaugeMetricFamily, "dfsd_name_cache_names", "Names kept in memory", len),
]


def watch_read_cache(cache: CacheCounts) -> None:
    REGISTRY.register(ReadAtScrape(cache, READ_CACHE_READINGS))


class NameCounts(Protocol):
    """What the names kept in memory count (``dfsd.manager.name_cache.NameCache``)."""

    hits: int
    misses: int

    def __len__(self) -> int: ...


def watch_name_cache(names: NameCounts) -> None:
    REGISTRY.register(ReadAtScrape(names, NAME_CACHE_READINGS))

"""dfs-bench's baselines: the durable creates keep the rules a storage node keeps (at most 36 entries to a directory);
the streaming sink stores what the client sends, and a hashed put only if the digests agree."""

from __future__ import annotations

import collections
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dfsd.tools.bench_baselines import (
    DIRECTORY_ENTRIES,
    MISMATCH,
    PUT_HASHED,
    STREAM_HEADER,
    _SinkServer,
    create_path,
    durable_creates,
    send,
)


@pytest.mark.parametrize("count", [1, 36, 37, 1296, 1297, 20_000])
def test_no_directory_of_the_durable_creates_holds_more_than_36_entries(count: int) -> None:
    root = Path("/creates")
    paths = [create_path(root, index, count).relative_to(root).parts for index in range(count)]
    assert len(set(paths)) == count
    entries: dict[tuple[str, ...], set[str]] = collections.defaultdict(set)  # directory below root -> its entries
    for parts in paths:
        for depth in range(len(parts)):
            entries[parts[:depth]].add(parts[depth])
    assert max(len(names) for names in entries.values()) <= DIRECTORY_ENTRIES


def test_durable_creates_time_every_file_and_keep_them(tmp_path: Path) -> None:
    payloads = [index.to_bytes(2, "big") * 512 for index in range(100)]
    seconds, latencies = durable_creates(tmp_path / "creates", payloads, 4)
    assert len(latencies) == 100 and seconds > 0
    for index, data in enumerate(payloads):
        assert create_path(tmp_path / "creates", index, 100).read_bytes() == data


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A baseline sink writing into ``tmp_path``, served by a thread; its address."""
    server = _SinkServer(tmp_path / "sink.bin")
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        serving.join()


@pytest.mark.parametrize("sha256", [False, True])
def test_baseline_send_stores_the_file_whole(sink: tuple[str, int], tmp_path: Path, sha256: bool) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # a partial last block, written through the cache
    send(sink, source, sha256=sha256)
    assert (tmp_path / "sink.bin").read_bytes() == source.read_bytes()


def test_baseline_sink_refuses_a_hashed_put_whose_digest_differs(sink: tuple[str, int]) -> None:
    data = os.urandom(64 * 1024)
    with socket.create_connection(sink) as sock:
        sock.sendall(STREAM_HEADER.pack(PUT_HASHED, len(data)) + data + hashlib.sha256(b"other").digest())
        assert sock.recv(1) == MISMATCH

"""dfs-bench's durable-creates baseline keeps the rules a storage node keeps: at most 36 entries to a directory."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from dfsd.tools.bench_baselines import DIRECTORY_ENTRIES, create_path, durable_creates


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


def test_durable_creates_time_every_file_and_leave_nothing(tmp_path: Path) -> None:
    seconds, latencies = durable_creates(tmp_path / "creates", [b"x" * 1024] * 100, 4)
    assert len(latencies) == 100 and seconds > 0
    assert not (tmp_path / "creates").exists()

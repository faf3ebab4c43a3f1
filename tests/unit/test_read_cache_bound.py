"""The read cache's bound (``dfsd/manager/read_cache.py``): what it charges never passes its capacity, the least
recently used go first, and the charge covers the memory the entries really take."""

from __future__ import annotations

import os
import tracemalloc

from dfsd.manager.read_cache import ReadCache, charge


def test_the_charges_never_pass_the_capacity_and_the_least_recently_used_go_first() -> None:
    cache = ReadCache(10 * charge(bytes(1024)))
    for file_id in range(1, 11):
        cache.add(file_id, bytes(1024))
    assert len(cache) == 10 and cache.used == cache.capacity
    assert cache.get(1) is not None  # now the most recently used
    cache.add(11, bytes(1024))
    assert cache.get(2) is None and cache.get(1) is not None and cache.get(11) is not None
    cache.add(12, bytes(5 * 1024))  # one larger file pushes out as many small ones as it needs
    assert cache.used <= cache.capacity
    assert [file_id for file_id in range(1, 13) if cache.get(file_id) is not None] == [1, 8, 9, 10, 11, 12]
    assert (cache.hits, cache.misses) == (9, 7)


def test_files_larger_than_inline_or_than_the_capacity_are_not_kept() -> None:
    cache = ReadCache(charge(bytes(64 * 1024)))
    cache.add(1, bytes(64 * 1024 + 1))  # streamed, never inline
    assert len(cache) == 0
    cache.add(2, bytes(64 * 1024))
    assert len(cache) == 1
    small = ReadCache(charge(bytes(100)))
    small.add(3, bytes(101))
    assert len(small) == 0 and small.used == 0


def test_capacity_0_holds_nothing() -> None:
    cache = ReadCache(0)
    assert not cache.holds(1)
    cache.add(1, b"")
    assert len(cache) == 0 and cache.used == 0


def test_discard_frees_the_charge() -> None:
    cache = ReadCache(1024 * 1024)
    cache.add(1, bytes(1000))
    cache.add(2, bytes(2000))
    cache.discard(1)
    cache.discard(7)  # never held: nothing happens
    assert len(cache) == 1 and cache.used == charge(bytes(2000))
    assert cache.get(1) is None


def test_the_charge_covers_the_memory_the_entries_take() -> None:
    """Filled to its bound with 1 KiB files, the cache takes no more memory than it says (traced by Python's
    allocator: the key, the table, the ordering and the bytes objects)."""
    capacity = 4 * 1024 * 1024
    payloads = [os.urandom(1024) for _ in range(capacity // 1024)]  # made before tracing: only the cache's counts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = ReadCache(capacity)
        for file_id, data in enumerate(payloads, start=10**9):
            cache.add(file_id, data[:1000])  # a fresh bytes object per entry, held only by the cache
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.used <= capacity and len(cache) == capacity // charge(bytes(1000))
    assert taken <= cache.used

"""Names kept in memory by a manager alone on a shared database (name -> file record, bounded, least recently used out
first): while it holds the sole lease (``sole_lease.py``), a read finds its name here and asks the database nothing.

Theory of operation. An entry is only ever a record the database held: one a lookup found, or one this manager's own
commit wrote. It stays exact because the holder sees every write to ``files`` (no other manager writes while it may
use these entries, ``sole_lease.py``), and each of its own is applied when answered, before the client hears of it:
a commit of a new name adds its record (nothing else changes: no entry can hold a name that had no file), and every
other write forgets what it may have changed (by name: a delete, a replace; by file id: a move, lost marks; or
everything: a write whose rows it cannot tell).

A lookup (or a commit) is answered some time after it was asked, and a write of ours may have been answered between:
the answer may then be older than that write, and is not kept. So every write that forgets moves ``epoch`` on, and a
record is added only if the epoch is still the one read when its lookup (or commit) began. That costs an entry now
and then under mixed traffic (a lookup that overlapped any write), never a wrong one.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable

from .store import FileRecord

# What an entry costs beyond its name and metadata: the record, its digest, its slots in both tables. Measured with
# tracemalloc: 65,536 records of 33-character names and no metadata took 415 bytes each, 82 of them the name.
ENTRY_OVERHEAD = 340

# The memory its entries may take, as ``charge`` counts it: about 100,000 names of dfs-bench's length, more than the
# read cache holds 1 KiB files (``read_cache.py``), and as bounded whatever the names' and metadata's lengths.
CAPACITY = 32 * 1024 * 1024


def charge(record: FileRecord) -> int:
    """The memory an entry holding ``record`` takes, as the capacity counts it."""
    meta = record.meta
    kept = sys.getsizeof(meta) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in meta.items()) if meta else 0
    return ENTRY_OVERHEAD + sys.getsizeof(record.name) + kept


class NameCache:
    """At most ``capacity`` bytes of memory (``charge``) of file records by name, least recently used out first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.used = 0  # bytes charged for the entries held
        self.epoch = 0  # moves on with every write that forgets
        self.hits = 0  # names answered from here (counted by the store, which asks the database for the others)
        self.misses = 0  # names asked of the database
        self._records: OrderedDict[str, FileRecord] = OrderedDict()
        self._names: dict[int, str] = {}  # file id -> name, for the writes that name files by id

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> FileRecord | None:
        """The record of ``name`` if kept (now the most recently used)."""
        record = self._records.get(name)
        if record is not None:
            self._records.move_to_end(name)
        return record

    def add(self, record: FileRecord, since: int) -> None:
        """Keep ``record``, found or written by a lookup or commit begun at epoch ``since``, unless a write that
        forgets was answered since."""
        cost = charge(record)
        if since != self.epoch or cost > self.capacity:
            return
        self._drop(record.name)
        while self.used + cost > self.capacity:
            self._drop(next(iter(self._records)))
        self._records[record.name] = record
        self._names[record.id] = record.name
        self.used += cost

    def forget(self, names: Iterable[str] = (), ids: Iterable[int] = ()) -> None:
        """A write to these names, or these file ids, was answered (or failed, its outcome unknown)."""
        self.epoch += 1
        for name in names:
            self._drop(name)
        for file_id in ids:
            if (named := self._names.get(file_id)) is not None:
                self._drop(named)

    def clear(self) -> None:
        """Forget every name (the lease is lost, or a write changed rows it cannot tell)."""
        self.epoch += 1
        self._records.clear()
        self._names.clear()
        self.used = 0

    def _drop(self, name: str) -> None:
        record = self._records.pop(name, None)
        if record is not None:
            self._names.pop(record.id, None)
            self.used -= charge(record)

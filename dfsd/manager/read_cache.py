"""The manager's read cache: the bytes of small files by file id, so that a read of a file read or written lately is
answered without the hop to its storage node.

Why it needs no invalidation: a file id is never reused (``store.py``: ids come from a durable counter or sequence,
and ``dfsd migrate`` carries the counter over), and the bytes under an id never change (a replace is a new id; a move
copies the same bytes under the same id). So the bytes kept under an id are that file's bytes for as long as anyone can
name it. What does change — whether a name still leads to the id, whether the file may be served — is checked on
every read before this cache is asked: the name is looked up each time (no name is cached here; a manager alone on
PostgreSQL answers it from memory only while no other manager can change it, ``sole_lease.py``, so a delete or
replace acknowledged through another manager sharing the database is seen at once), and the record's
node must be up right now and the file not marked lost (``FileOperations``), so a down node's files still answer
"file unavailable", cached or not.

Only files that travel inline (``transfer.travels_inline``: at most 64 KiB) are kept: those are the reads whose cost
is the hop, not the bytes. It is filled after an inline upload commits and when a whole inline file is relayed from a
node, so a cold read warms it.

The bound is real memory: each entry is charged its ``bytes`` object's size plus ENTRY_OVERHEAD, and the least
recently used entries leave first once the charges would pass the capacity. Capacity 0 turns the cache off.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

from ..transfer import travels_inline

# What an entry costs beyond its bytes object's own size (sys.getsizeof: the bytes plus a 33-byte header): its int
# key, its share of the table and ordering links (74-115 bytes per entry with tracemalloc, the higher just after the
# table grows), and what the allocator adds to the bytes object. Measured as a whole process: 40,000 puts of 1 KiB
# grew a manager's resident memory by 36.8 MB with a 32 MiB cache and by 2.5 MB with none; the 27,571 entries held
# took 1,244 bytes each, 187 beyond getsizeof.
ENTRY_OVERHEAD = 192

# The default capacity: the bytes of about 26,000 1 KiB files, or 500 of 64 KiB, beside a manager whose own
# resident memory is about 38 MiB at rest; large enough to hold a busy set of small files, small enough for any host.
DEFAULT_CAPACITY = 32 * 1024 * 1024


def charge(data: bytes) -> int:
    """The memory an entry holding ``data`` takes, as the capacity counts it."""
    return sys.getsizeof(data) + ENTRY_OVERHEAD


class ReadCache:
    """At most ``capacity`` bytes of memory (``charge``) of files' bytes by file id, least recently used out first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.used = 0  # bytes charged for the entries held
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, size: int) -> bool:
        """Whether a file of ``size`` bytes may be kept: the cache is on and the file travels inline."""
        return self.capacity > 0 and travels_inline(size)

    def get(self, file_id: int) -> bytes | None:
        """The bytes of file ``file_id`` if held (now the most recently used), counted as a hit or a miss."""
        data = self._entries.get(file_id)
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(file_id)
        return data

    def add(self, file_id: int, data: bytes) -> None:
        """Keep the bytes of file ``file_id`` (those it will always have: ids are never reused), making room by
        dropping the least recently used; a file that does not travel inline, or costs more than the whole capacity,
        is not kept. A view of a buffer that may be reused is copied (``bytes`` of a bytes object is that object)."""
        data = bytes(data)
        cost = charge(data)
        if not travels_inline(len(data)) or cost > self.capacity or file_id in self._entries:
            return
        while self.used + cost > self.capacity:
            _, dropped = self._entries.popitem(last=False)
            self.used -= charge(dropped)
        self._entries[file_id] = data
        self.used += cost

    def discard(self, file_id: int) -> None:
        """Drop file ``file_id`` (deleted or replaced: nobody can name it again), freeing its memory early."""
        data = self._entries.pop(file_id, None)
        if data is not None:
            self.used -= charge(data)

"""glibc's malloc set up for moving large files: memory freed is kept for the next chunk instead of being given back.

By default glibc returns the free memory at the top of its heap to the kernel once more than a few MiB lie there, and
serves a block of a MiB or more from a fresh mapping: a process handling a stream of 1 MiB chunks gives its pages back
and faults them in again for every few chunks. Measured with ``dfs-cat -o`` of 1 GiB: 110,000 page faults and 0.15 s
of system time more than with the limits below (10,000 faults), for the same peak memory, since the memory kept is
memory the process had in use a moment before.

One arena serves every thread. glibc gives each thread that allocates its own arena, each keeping its own TRIM_BYTES
of free memory: dfs-push, whose chunks are read (allocated) in a thread while the loop sends, peaked at 48-51 MiB for
1 GiB with an arena per thread against 42 MiB with one. Chunks are few (a thousand 1 MiB blocks per GiB) and Python's
small objects come from its own allocator, so the threads hardly ever wait for the arena's lock.
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Free memory kept at the top of the heap: a few chunks' worth.
TRIM_BYTES = 16 * 1024 * 1024

# Blocks this large and above get a mapping of their own, given back when freed: above any frame (4 MiB at most), so
# every chunk comes from the heap. (Setting it also stops glibc moving both limits by itself.)
MMAP_BYTES = 8 * 1024 * 1024


def keep_freed_memory() -> None:
    """Apply the limits above to this process, if its C library is glibc (elsewhere nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)
    mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
    mallopt(M_ARENA_MAX, 1)

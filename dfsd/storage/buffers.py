"""The buffers a storage node reads a large file's chunks into to send them, used again once no view of them lives.

A chunk read into a fresh ``bytes`` costs the node more than reading it: a disk thread's malloc arena gives a freed
1 MiB back to the kernel, so the next one comes new, and every 4 KiB page of it faults, is zeroed and charged to the
cgroup. Profiled with perf on a node serving a 1 GiB download, those faults took about a fifth of its CPU, as much as
the copy out of the page cache itself. A buffer read into a second time costs none of that.

A buffer may be read into again only once no frame of it is waiting to be written: uvloop's transport holds a
``memoryview`` of each frame it has not written yet, and a bytearray with a view alive refuses to change size
(``unshared``, as framing's decoder tests its own buffers). ``take`` hands out buffers that pass, or fresh ones;
``give`` takes them back once the caller holds the views it sends, so that a buffer is never handed out twice.

(Measured and not kept: sending a large file's chunks with ``os.sendfile``, their frame heads written before each, in a
thread, through a duplicate of the socket's descriptor. The node's CPU per GiB served fell from 0.60 s to 0.18 s, but
the manager's rose from 0.42 s to 1.7-1.8 s: the socket then holds the file's page-cache pages, just read from the
disk and cold in every CPU cache, and the relay's copy out of them ran at about 0.5 GB/s, where a copy out of the
buffers the sender had just written stays in cache. The download's CPU in all: 2.25 s -> 3.2 s per GiB. An uploading
client sending its file so saved nothing measurable, and cost the manager 0.05-0.1 s per GiB.)
"""

from __future__ import annotations

from ..protocol.framing import unshared


class ReadBuffers:
    """Buffers of ``size`` bytes, at most ``keep`` of them kept between uses (the rest are dropped once sent)."""

    def __init__(self, size: int, keep: int) -> None:
        self._size = size
        self._keep = keep
        self._kept: list[bytearray] = []  # given back: free once ``unshared``

    def take(self, count: int) -> list[bytearray]:
        """``count`` buffers nobody uses (on the loop, as ``give``): kept ones that are free, fresh ones if too few.
        A buffer taken leaves the kept ones by identity: ``list.remove`` compares bytearrays by their bytes, and took
        out another buffer holding the same bytes (the same chunk of one file, sent to two downloads at once), so the
        one taken stayed kept and went to a second download, read into while the first still sent it."""
        taken: list[bytearray] = []
        still_kept: list[bytearray] = []
        for buffer in self._kept:
            if len(taken) < count and unshared(buffer):
                taken.append(buffer)
            else:
                still_kept.append(buffer)
        self._kept = still_kept
        taken.extend(bytearray(self._size) for _ in range(count - len(taken)))
        return taken

    def give(self, buffers: list[bytearray]) -> None:
        """Keep ``buffers`` (each with a view of it already made, or none needed) for a later ``take``."""
        self._kept.extend(buffers[: max(0, self._keep - len(self._kept))])

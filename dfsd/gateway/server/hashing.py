"""A digest of a streamed body computed in a worker thread of its own, beside the event loop.

Theory of operation. An upload through the gateway is hashed more than once: its MD5 (the ETag; about 1.2 s of CPU
per GiB on the machine this was measured on, more than all the rest of the gateway's work on the bytes), the SHA-256
of a signed payload, a trailing ``x-amz-checksum-*``. On the event loop those calls run one after another with the
receiving and the relaying, on one core. ``HashThread`` hands each piece to one worker thread (a single-worker
executor, so the pieces are hashed in order), where hashlib lets go of the GIL, so the digest runs on the other core
while the loop receives the next piece and sends this one on. The loop never waits for a piece to be hashed, only for
the oldest when ``DEPTH`` are waiting (so a hash slower than the network paces the upload instead of piling up
memory), and for the last one in ``finish``, before the body's end is checked.

A body passed on in one piece (every object up to 1 MiB) never starts a thread: the piece is hashed on the loop,
where it costs less than a hand-over would.

Measured (1 GiB PUTs, UNSIGNED-PAYLOAD, 14 A/B pairs at load 8-18 on 2 cores): the loop's thread spent 0.83-0.97 s
of CPU per GiB instead of 1.99-2.21, the process 2.53-2.79 s instead of 2.35-2.66 (a hand-over costs about 40 ms per
GiB of 1 MiB pieces, measured alone; the MD5 took 1.3-1.4 s per GiB in its thread). So the loop is no longer the
upload's serial path: on a free core the MD5 runs beside it, and on a saturated machine the upload costs about 5 %
more CPU. (``dfsd.bulk.ThreadedWriter`` hands over 4 MiB batches and holds two: twice the memory per upload, for a
saving too small to measure here.)
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Pieces (each up to the client's CHUNK_SIZE, 1 MiB) handed over and not yet hashed, at most: enough that the thread
# always has the next piece when it finishes one, few enough that an upload holds little more than it did without it.
DEPTH = 4


class HashThread:
    """Feeds ``update`` every piece given to ``feed``, in order, in a worker thread started at the first piece that
    is not the body's last; ``finish`` returns once every piece has been fed. ``close`` lets the thread go (the
    pieces not yet hashed are dropped)."""

    def __init__(self, update: Callable[[bytes], object]) -> None:
        self._update = update
        self._executor: ThreadPoolExecutor | None = None
        self._pending: collections.deque[asyncio.Future[object]] = collections.deque()

    async def feed(self, piece: bytes, *, last: bool) -> None:
        """Hash ``piece`` after those fed before it; ``last``: no piece follows (hashed here if none went to the
        thread)."""
        if self._executor is None:
            if last:
                self._update(piece)
                return
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfsd-hash")
        if len(self._pending) >= DEPTH:
            await self._pending.popleft()
        self._pending.append(asyncio.get_running_loop().run_in_executor(self._executor, self._update, piece))

    async def finish(self) -> None:
        """Wait until every piece fed has been hashed."""
        while self._pending:
            await self._pending.popleft()
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for future in self._pending:
            future.cancel()
        self._pending.clear()

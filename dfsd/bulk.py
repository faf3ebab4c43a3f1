"""A large file's bytes from the event loop into a local file, or a hasher: in a thread, in batches.

Whoever takes a large file spends most of its time in ``os.write`` and SHA-256 (a storage node taking an upload, the
client taking a download). Both release the GIL, so a thread does them while the event loop goes on receiving; each
hashes in one writer and writes in another, so that the two overlap too.
A handoff between the loop and a thread wakes one of them (a futex call, and a fight for the GIL): handing over each
1 MiB frame costs more than it saves, so the bytes go over in batches of BATCH_BYTES.

``ThreadedWriter`` keeps at most one batch in its thread while the next one fills: a receiver that outruns its disk
waits in ``write``, stops reading its socket, and TCP's flow control holds the sender back, so memory holds two batches
whatever the size of the file. (An uploading client reads and hashes its file in a thread too, one batch ahead of its
sending: see ``dfsd.client._read_ahead``.)

No thread is left behind: ``finish`` waits for a thread's work even when the task awaiting it is cancelled, so nobody
closes or reuses a file while a thread still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .protocol.messages import Buffer

T = TypeVar("T")

# Bytes handed to a thread at once: large enough that the wake-ups cost nothing next to the work (4 frames of 1 MiB),
# small enough that two of them in memory are nothing next to the 64 MiB a process may use.
BATCH_BYTES = 4 * 1024 * 1024


async def finish(future: asyncio.Future[T]) -> T:
    """Await ``future`` (a thread's work); if cancelled, still wait for the thread to end before raising."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


async def in_thread(executor: Executor | None, function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a thread of ``executor`` (None: the loop's default) and wait for it to end, even if
    cancelled (``finish``).

    A thread of a given executor hands its outcome straight to a future of the loop (``_outcome_to``):
    ``run_in_executor`` would chain the executor's own future into one of the loop's, which costs the loop a lock, a
    copy of the state and two more callbacks per trip, on every small write of a storage node."""
    loop = asyncio.get_running_loop()
    if executor is None:
        return await finish(loop.run_in_executor(None, function, *args))
    done: asyncio.Future[T] = loop.create_future()
    executor.submit(_outcome_to, loop, done, function, args)
    return await finish(done)


def _outcome_to(
    loop: asyncio.AbstractEventLoop, done: asyncio.Future[T], function: Callable[..., T], args: tuple[Any, ...]
) -> None:
    """(In the thread.) Run ``function`` and settle ``done`` with its result or its error, on ``loop``."""
    try:
        result = function(*args)
    except BaseException as err:
        loop.call_soon_threadsafe(_settle, done, None, err)
    else:
        loop.call_soon_threadsafe(_settle, done, result, None)


def _settle(done: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if done.done():  # cannot be: ``finish`` never cancels it; but a settled future must not raise here
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)  # type: ignore[arg-type]


class ThreadedWriter:
    """Bytes handed to ``write`` (a function that writes all it is given: ``write_all`` on a descriptor, or a buffered
    file's ``write``; or a hasher's ``update``) in a thread, a batch of ``batch_bytes`` at a time.

    The file stays the caller's: close it only after ``flush`` or ``settle``, once no thread uses it. An error of the
    thread (an ``OSError``) is raised by the ``write`` or ``flush`` that waits for its batch."""

    def __init__(
        self,
        write: Callable[[Buffer], object],
        executor: Executor | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self._write_one = write
        self._executor = executor
        self._batch_limit = batch_bytes
        self._batch: list[Buffer] = []
        self._batch_bytes = 0
        self._writing: asyncio.Future[None] | None = None  # the batch in the thread

    async def write(self, data: Buffer) -> None:
        """Append ``data`` (kept until written: the caller must not change it); waits only while a full batch waits
        for the one in the thread."""
        self._batch.append(data)
        self._batch_bytes += len(data)
        if self._batch_bytes >= self._batch_limit:
            await self._hand_over()

    async def flush(self) -> None:
        """Return once every byte given so far is written."""
        await self._hand_over()
        await self._wait()

    async def settle(self) -> None:
        """Wait for the batch in the thread, if any, ignoring its outcome: the way out after a failure elsewhere."""
        with contextlib.suppress(Exception):
            await self._wait()

    async def _hand_over(self) -> None:
        await self._wait()
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._writing = asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)

    async def _wait(self) -> None:
        writing = self._writing
        if writing is None:
            return
        try:
            await finish(writing)
        finally:
            if writing.done():
                self._writing = None

    def _write(self, batch: list[Buffer]) -> None:
        """(In a thread.)"""
        for data in batch:
            self._write_one(data)


def write_all(fd: int, data: Buffer) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (``os.write`` may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

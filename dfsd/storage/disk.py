"""A node's blocking disk work, off the event loop.

A new file is durable once its bytes are fsynced and the directory entry its rename made is fsynced too. Those calls,
and creating a file (which waits for the directory's lock while another thread syncs that directory), run in a pool of
DISK_THREADS threads of the node's own, so that 16 uploads syncing at once each have a thread instead of queueing
behind the event loop's small default executor; and the whole of publishing a file is one trip to a thread, not one per
call.

(Measured and not kept: sharing one directory fsync among the renames that came before it, as databases group their
log commits, gave nothing on ext4, where syncing the file already commits the journal most of the way.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Enough threads for every upload a busy node has in flight to be syncing at once.
DISK_THREADS = 32


class Disk:
    """The node's blocking disk work and its threads."""

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(DISK_THREADS, thread_name_prefix="disk")

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in a disk thread; if cancelled, still wait for it to end, so that no thread is left writing
        to a descriptor or a path the caller is about to close or reuse."""
        future = asyncio.get_running_loop().run_in_executor(self._threads, function, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise

    @staticmethod
    def publish(fd: int, partial: Path, final: Path, directories: list[Path]) -> None:
        """(In a disk thread.) Sync the written file ``fd`` and close it, rename it from ``partial`` to ``final``, and
        sync ``directories`` (the final one first, then the parents of any made for it) so the rename survives a
        crash."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(partial, final)
        for directory in directories:
            _fsync_directory(directory)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

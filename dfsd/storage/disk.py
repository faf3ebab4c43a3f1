"""How a storage node writes a new file durably, and the threads that do its blocking disk work.

A new file is durable once its bytes are fsynced and the directory entry that names it is fsynced too. Every file a
node takes — an upload streamed through the manager, a small file inline in its ``store``, a copy from another node —
goes through one ``DurableWrite``: take a slot in the layout, create the file there, write and hash the bytes, check
them against the size and digest the sender announced, fsync, close, fsync the directory. Leaving it any other way (an
error, a cancelled task, a sender gone) removes what was created and frees the slot, so a failed write leaves nothing.

A stream is written to a partial entry (``<digit>.<file id>.part``) and renamed into place once synced: it stays open
for seconds or minutes, and what a crash leaves of it (up to gigabytes) the node removes by itself at start-up, without
waiting for a manager. A small file given whole (at most INLINE_MAX, in one trip to a thread) is created at its final
path from the start and never renamed, one metadata change less per write (measured: see the README's design notes).
That is as safe, because what makes an unacknowledged file harmless is that no record names it, not its name:

- the node answers ``stored`` only after both fsyncs, and the manager writes the file's row only after ``stored``: every
  file a row names is whole and durable (a crash before that can leave the file torn or empty, never recorded);
- file ids are never reused (claimed durably in blocks ahead of use, ``manager/store.py``), so a file a crash left at
  its final path can be neither confused with a later upload's nor collide with one (``Layout.begin`` refuses a held
  id);
- while it is written, it is in the layout's slots being written, not its index: never served, listed (``list_held``)
  or reported before it is committed; after a crash, the node's start-up loads it like any file and reports it in its
  inventory, where the id is held but recorded nowhere, and no longer in flight (its upload failed with the crash;
  the manager frees the reservation then, or at its own restart): an orphan, which the reconciliation removes;
- the tests: a kill between the write and the commit (``test_small_file_killed_between_write_and_commit_...``,
  tests/faults/test_membership.py), a file cut short (``test_rebuild_holds_a_small_file_a_crash_cut_short_...``).

Directories are made on the way when a slot's directory does not exist yet; the parent of each is fsynced at once,
under a lock, so any writer that finds a directory knows it is durable and has only its own directory to sync.

Creating and renaming a file need the directory's lock, which a concurrent fsync of that directory holds, and the
syncs themselves take milliseconds: they run in a pool of DISK_THREADS threads of the node's own, so that 16 uploads
syncing at once each have a thread instead of queueing behind the event loop's small default executor. Each write
makes as few trips there as it can: one to create the file and one to publish it; a small file given whole makes one,
and as few system calls there as it can, since each one hands the GIL back and takes it again, which the event loop
and the other disk threads want too: a small file is opened with O_SYNC, so that its one ``write`` is also its fsync,
and the directories files go into are kept open (``directories.py``), so that neither making sure a directory exists
nor syncing it opens it again. Per 1 KiB write, counted
with strace on a node fed 16 stores at once: fsync 2.03 -> 1.03, stat 1.03 -> 0.18, futex 66 -> 52 (strace slows it);
then, with the directories kept open and no Path built per write: openat 1.97 -> 1.19, close 1.97 -> 1.08, futex 38.9
-> 31.9, all system calls 58.9 -> 49.5 (the log, too, now written once per turn of the loop: write 4.2 -> 2.6).
The bytes of a stream are written and hashed there too, a few MiB per trip (``bulk.ThreadedWriter``): on the event
loop, writing and hashing took three fifths of a node's time taking a large upload, and the loop could not read the
next bytes meanwhile. The hashing and the writing go in two writers, each a trip of its own, so that they overlap as
well: done in turn in one thread, a batch's SHA-256 (half of the node's CPU for a large upload) and its copy into the
direct write's stage held the loop's next batch back (1 GiB dfs-push, 13 pairs under load 6-11: new/old 0.86-1.82,
median 1.17, for the same CPU, 0.91-1.03 s per GiB at the node; with STREAM_BATCH, 4 pairs: 0.88-1.31, median 1.18).
A stream announced at DIRECT_MIN bytes or more is written around the page cache (``O_DIRECT``, ``dfsd/directio.py``):
the kernel's copy into cache pages was the largest cost of a node taking a large upload (measured: 2.0 s of system
time per GiB in its disk thread, against under 0.1 s written directly), and its fsync then has almost nothing left
to write.

(Measured and not kept: sharing one directory fsync among the renames that came before it, as databases group their
log commits, gave nothing on ext4, where syncing the file already commits the journal most of the way; measured again
on an ext4 without a journal, where each fsync writes and flushes on its own, it still gave nothing. Nor did making
the small files that arrive together durable in one trip to one thread (created and written, fsynced, renamed, each
directory fsynced once): it cut the node's thread switches per write from about 15 to 5 and its CPU per write by a
tenth to a half, but the fsyncs, one after another in that thread, no longer overlapped in the disk, and a node took
half as many 1 KiB and 64 KiB writes per second as with a thread per write; two such threads did no better. Tried
once more with each directory's fsync shared among the writers that need it at once (one runs, those arriving
meanwhile wait for the next, which one of them runs): the same CPU per write, and more thread switches, 17-19 per write
against 13-16, its waits on a condition costing more than the fsyncs they saved. Nor did a thread pool of our own
that queues a bare call where ``ThreadPoolExecutor`` builds a future with a condition and counts idle threads with a
semaphore: futex calls per write 31.9 -> 32.6, the node's CPU per write 0.91 of before (median of 6 pairs, spread
0.64-1.09): the futex calls are the threads' fight for the GIL around each system call, not the pool's bookkeeping.
Nor did syncing a small file's directory in a second disk thread while the first one writes (and so syncs) the file,
so that the two syncs overlap instead of following each other: the node's median time per 1 KiB store was longer in 3
of 4 pairs, 8.3 to 15.5 ms against 5.6 to 9.7 ms (load average 11 to 14), the extra hand-off costing more than the
wait it saved. Nor did a pool of 4 threads of their own for small files given whole, so that fewer threads fight for
the GIL: 1 KiB puts 0.67-1.10 times as many a second (median 1.05, 4 pairs, load average 6.6 to 7.6), the node's CPU
per write the same, 0.91-1.14 of before.)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..bulk import ThreadedWriter, in_thread, write_all
from ..directio import DirectFile
from ..protocol import CHUNK_SIZE, BadRequest, ChecksumMismatch, InternalError, StorageFull
from ..protocol.messages import Buffer
from .buffers import ReadBuffers
from .directories import Directories
from .layout import Layout, partial_path

T = TypeVar("T")

# Enough threads for every upload a busy node has in flight to be syncing at once.
DISK_THREADS = 32

# A stream announced at this size or more is written with O_DIRECT: large enough that its staging buffer (2 MiB,
# ``directio.STAGE_BYTES``) is small next to its bytes, so that many small uploads at once do not each hold them.
DIRECT_MIN = 16 * 1024 * 1024

# Bytes a stream's writer and its hasher each hand to a disk thread at once: half of ``bulk.BATCH_BYTES``, since the two
# hold up to three batches of the stream's frames between them, and the decoder's buffers that hold those frames stay
# in memory as long as they do. Measured on 1 GiB dfs-push alternating with dfs-cat -o (4 pairs, load 8): the node's
# peak memory 63.9 -> 55.4 MiB against 4 MiB batches (61.6 MiB before the hashing had a writer of its own), the rate
# the same (new/old median 1.00).
STREAM_BATCH = 2 * 1024 * 1024

# Chunk buffers kept for reading large files to send (``buffers.ReadBuffers``): one download holds up to about three
# trips' worth at once (one read, one the transport is writing, one waiting for it), 12 MiB, small next to the 64 MiB a
# node may use; more downloads at once read into fresh ones beyond these.
READ_BUFFERS = 12

# Flags for a new partial file: it must not exist yet.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# A small file given whole is opened so: its one ``write`` returns once the bytes are synced, as an fsync would, so
# the write and the sync are one system call (each call hands the GIL back and fights for it again).
_NEW_SYNCED_FILE = _NEW_FILE | os.O_SYNC


class Disk:
    """The node's blocking disk work and its threads."""

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(DISK_THREADS, thread_name_prefix="disk")
        self._directories: dict[Path, Directories] = {}  # by data directory (a node has one)
        self._directories_lock = threading.Lock()
        self.read_buffers = ReadBuffers(CHUNK_SIZE, READ_BUFFERS)  # what large files are read into to be sent

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        for directories in self._directories.values():
            directories.close()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in a disk thread; if cancelled, still wait for it to end, so that no thread is left writing
        to a descriptor or a path the caller is about to close or reuse."""
        return await in_thread(self._threads, function, *args)

    def writer(self, write: Callable[[Buffer], object]) -> ThreadedWriter:
        """A stream's bytes handed to ``write`` (a file's, or a hasher's ``update``) in the disk threads."""
        return ThreadedWriter(write, self._threads, batch_bytes=STREAM_BATCH)

    def directory(self, path: str, root: Path) -> contextlib.AbstractContextManager[int]:
        """(In a disk thread.) A descriptor of the directory of ``path`` (``directories.py``), made below ``root`` if
        it is missing, open until the block ends."""
        return self._directories_of(root).use(os.path.dirname(path))

    @contextlib.contextmanager
    def created(self, path: str, flags: int, root: Path) -> Iterator[tuple[int, int]]:
        """(In a disk thread.) Create the file ``path`` (``os.open`` with ``flags``) relative to its directory's
        descriptor, the directory made below ``root`` if it is missing; yield the file's descriptor (the caller's to
        close) and the directory's (open until the block ends)."""
        directories = self._directories_of(root)
        directory, name = os.path.split(path)
        with contextlib.ExitStack() as held:
            folder = held.enter_context(directories.use(directory))
            try:
                fd = os.open(name, flags, 0o644, dir_fd=folder)
            except FileNotFoundError:  # its directory was open, then removed behind the node's back: make it again
                held.close()
                directories.forget(directory)
                folder = held.enter_context(directories.use(directory))
                fd = os.open(name, flags, 0o644, dir_fd=folder)
            yield fd, folder

    def _directories_of(self, root: Path) -> Directories:
        with self._directories_lock:
            directories = self._directories.get(root)
            if directories is None:
                directories = self._directories[root] = Directories(root)
            return directories


class DurableWrite:
    """One new file, from taking its slot to holding it durably; an async context manager.

    Inside the ``async with`` block, either hand the whole file to ``write_whole``, or call ``create``, feed the bytes
    to ``write`` as they arrive (it waits while the disk is behind) and finish with ``publish``. The file is kept only
    if the block ends normally: on any exception, even one raised after publishing, the partial entry or the published
    file is removed and the slot freed, so a sender that never heard "stored" leaves nothing behind. Errors are the
    protocol's: a full disk is ``StorageFull``, bytes that differ from what was announced ``BadRequest`` or
    ``ChecksumMismatch``.
    """

    def __init__(
        self, disk: Disk, layout: Layout, file_id: int, size: int | None = None, sha256: bytes | None = None
    ) -> None:
        self._disk = disk
        self._layout = layout
        self._file_id = file_id
        self._announced = size  # None: unknown until the stream ends
        self._sha256 = sha256
        self._hasher = hashlib.sha256()
        self._size = 0
        self._final = ""  # its path once complete, as text (``Layout.location``)
        self._at: str | None = None  # where the file is on disk, from its creation on (set in a disk thread)
        self._fd = -1
        self._writer: ThreadedWriter | None = None  # a stream's, from ``create`` on
        self._hashing: ThreadedWriter | None = None  # its hashing, in a thread beside the writing one
        self._direct: DirectFile | None = None  # a large stream's file around the page cache, until published
        self._held = False  # the layout counts it as held

    async def __aenter__(self) -> DurableWrite:
        try:
            self._final = self._layout.begin(self._file_id)
        except FileExistsError:
            raise BadRequest(f"bad request: this node already holds file id {self._file_id}") from None
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._hashing is not None:
            await self._hashing.settle()
        if self._writer is not None:
            await self._writer.settle()  # its thread may still be writing to the descriptor
        if self._direct is not None:  # so may the direct file's own thread: what it has staged is dropped
            await self._disk.run(self._direct.__exit__, BaseException, None, None)
            self._direct = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._held:
            if self._at is not None:
                with contextlib.suppress(OSError):  # a file never created, or removed already, included
                    os.unlink(self._at)
            self._layout.abandon(self._file_id)
        elif error is not None:
            self._layout.remove(self._file_id)

    async def create(self) -> None:
        """Create the partial entry (one trip to a disk thread), ready for ``write``."""
        with _storage_errors():
            await self._disk.run(self._open_partial)
        write: Callable[[Buffer], object] = functools.partial(write_all, self._fd)
        if self._announced is not None and self._announced >= DIRECT_MIN:
            self._direct = DirectFile(self._fd)
            write = self._direct.write
        self._writer = self._disk.writer(write)
        self._hashing = self._disk.writer(self._hasher.update)

    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (not to be changed until published): more bytes than announced are refused before they
        reach the disk."""
        assert self._writer is not None, "create first"
        self._size += len(data)
        if self._announced is not None and self._size > self._announced:
            raise BadRequest(f"bad request: more bytes arrived than the {self._announced} announced")
        assert self._hashing is not None
        with _storage_errors():
            await self._hashing.write(data)
            await self._writer.write(data)

    async def publish(self, sha256: bytes | None = None) -> tuple[int, bytes]:
        """Check what was written against what was announced (and against ``sha256``, a digest that came with the end
        of the stream), then make it durable and hold it (one trip to a disk thread); return its size and SHA-256."""
        assert self._writer is not None, "create first"
        assert self._hashing is not None
        with _storage_errors():
            await self._hashing.flush()
            await self._writer.flush()
        return await self._publish(self._check(sha256), self._close_direct, self._sync_and_rename)

    async def write_whole(self, data: bytes) -> tuple[int, bytes]:
        """Write, check and publish a whole file in one trip to a disk thread, at its final path from the start (no
        partial entry, no rename: see the module's docstring); return its size and SHA-256."""
        self._size = len(data)
        self._hasher.update(data)
        return await self._publish(self._check(), functools.partial(self._write_synced, data))

    def _check(self, sha256: bytes | None = None) -> bytes:
        digest = self._hasher.digest()
        if self._announced is not None and self._size != self._announced:
            raise BadRequest(f"bad request: {self._size} bytes arrived, {self._announced} were announced")
        for expected in (self._sha256, sha256):
            if expected is not None and expected != digest:
                raise ChecksumMismatch(
                    f"checksum mismatch: the bytes received hash to {digest.hex()}, the sender said {expected.hex()}"
                )
        return digest

    async def _publish(self, digest: bytes, *steps: Callable[[], None]) -> tuple[int, bytes]:
        with _storage_errors():
            await self._disk.run(_in_turn, steps)
        self._held = True
        if not self._layout.committed(self._file_id):
            raise InternalError(f"internal error: file id {self._file_id} was abandoned before it was committed")
        return self._size, digest

    def _open_partial(self) -> None:
        """(In a disk thread.) Create the partial entry."""
        partial = partial_path(self._final)
        with self._disk.created(partial, _NEW_FILE, self._layout.root) as (self._fd, _):
            self._at = partial

    def _close_direct(self) -> None:
        """(In a disk thread.) Write what a large stream's direct file has staged, and close it."""
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    def _write_synced(self, data: bytes) -> None:
        """(In a disk thread.) A whole file at its final path: created, written and synced by one ``write`` (O_SYNC),
        closed, and its directory synced."""
        with self._disk.created(self._final, _NEW_SYNCED_FILE, self._layout.root) as (self._fd, folder):
            self._at = self._final
            if data:
                write_all(self._fd, data)
            else:  # no write, no sync: the empty file's creation needs one of its own
                os.fsync(self._fd)
            fd, self._fd = self._fd, -1
            os.close(fd)
            os.fsync(folder)

    def _sync_and_rename(self) -> None:
        """(In a disk thread.) A stream's partial entry, complete: synced, renamed into place, its directory synced."""
        self._sync_file()
        with self._disk.directory(self._final, self._layout.root) as folder:  # the partial entry's too
            name = os.path.basename(self._final)
            os.rename(partial_path(name), name, src_dir_fd=folder, dst_dir_fd=folder)
            self._at = self._final
            os.fsync(folder)

    def _sync_file(self) -> None:
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _in_turn(steps: tuple[Callable[[], None], ...]) -> None:
    for step in steps:
        step()


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """The node could not create, write or sync a file: say whether its disk is full."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(
                "storage full: the storage node's disk filled up; nothing was kept. Try again: new files now go to "
                "nodes with room (or free space / add a node)"
            ) from err
        raise InternalError(f"internal error: the storage node could not write: {err.strerror}") from err

"""The directories a node's new files go into, each kept open once it is found or made.

A durable write makes its file's directory entry durable by syncing the directory. Opening and closing the directory
for that, on every write, were two of the six system calls of a small file's write in its disk thread (open, write,
close; open, fsync and close the directory), each one handing the GIL back and taking it again (a fight with the
event loop and the other disk threads). So a directory is opened
once, made first (its parents synced) if it is missing, and its descriptor serves every write there: the file is
created (and a stream's partial entry renamed) relative to that descriptor, and that descriptor is synced. Everything
goes through the one descriptor, so the entry synced is the entry written, even if the directory's path was removed
and made again meanwhile: creating a file in a directory removed behind the node's back fails (``FileNotFoundError``),
and the writer ``forget``s it and opens it again, made anew.

New files fill one leaf directory after another, so a few are in use at a time: past OPEN_DIRECTORIES, the one used
longest ago that no write is using is closed. Used from the disk threads; a lock, held only for dictionary updates,
keeps the count of users of each descriptor, and a descriptor is closed only when no write uses it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Directory descriptors kept open: far more than the leaves written at once (a leaf takes 36 files), few next to the
# descriptors a process may open.
OPEN_DIRECTORIES = 64

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(eq=False)
class _Open:
    fd: int
    users: int = 0
    forgotten: bool = False  # no longer handed out: closed once its last user is done


class Directories:
    """Open descriptors of the directories below ``root`` that new files go into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}  # by path, as text; least recently used first
        self._making = threading.Lock()

    @contextlib.contextmanager
    def use(self, directory: str) -> Iterator[int]:
        """(In a disk thread.) A descriptor of ``directory``, made (below ``root``) if it is missing, open until the
        block ends."""
        entry = self._take(directory)
        try:
            yield entry.fd
        finally:
            with self._lock:
                entry.users -= 1
                done = entry.forgotten and not entry.users
            if done:
                os.close(entry.fd)

    def forget(self, directory: str) -> None:
        """``directory`` was removed behind the node's back: the next ``use`` opens it again (making it)."""
        with self._lock:
            entry = self._open.pop(directory, None)
            if entry is None:
                return
            entry.forgotten = True
            done = not entry.users
        if done:
            os.close(entry.fd)

    def close(self) -> None:
        with self._lock:
            entries, self._open = list(self._open.values()), {}
        for entry in entries:
            os.close(entry.fd)

    def _take(self, directory: str) -> _Open:
        with self._lock:
            entry = self._open.pop(directory, None)
            if entry is not None:
                entry.users += 1
                self._open[directory] = entry  # the most recently used now
                return entry
        fd = self._opened(directory)
        with self._lock:
            entry = self._open.get(directory)
            if entry is None:
                entry = self._open[directory] = _Open(fd)
                fd = -1
            entry.users += 1
            idle = self._unused()
        if fd >= 0:  # another thread opened it meanwhile: theirs is kept
            os.close(fd)
        for extra in idle:
            os.close(extra.fd)
        return entry

    def _unused(self) -> list[_Open]:
        """(Under the lock.) Those to close, the least recently used first, until at most OPEN_DIRECTORIES are open;
        those in use stay open."""
        unused = []
        excess = len(self._open) - OPEN_DIRECTORIES
        for path, entry in list(self._open.items()):
            if excess <= 0:
                break
            if not entry.users:
                del self._open[path]
                entry.forgotten = True
                unused.append(entry)
                excess -= 1
        return unused

    def _opened(self, directory: str) -> int:
        try:
            return os.open(directory, _DIRECTORY)
        except FileNotFoundError:
            self._make(Path(directory))
            return os.open(directory, _DIRECTORY)

    def _make(self, directory: Path) -> None:
        """Make ``directory`` and any parents it lacks below ``root`` (a data directory removed behind the node's back
        is an error, not made again empty), syncing the parent of each one made."""
        with self._making:
            missing = []
            while not directory.is_dir() and directory != self.root:
                missing.append(directory)
                directory = directory.parent
            for path in reversed(missing):
                path.mkdir()
                sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    fd = os.open(path, _DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

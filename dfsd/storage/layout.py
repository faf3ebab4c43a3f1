"""How a storage node lays files out on its disk.

Theory of operation: every stored file occupies one *slot*, numbered from 0. Slots are grouped in generations:
generation g holds 36**(g+1) slots and lives in the directory ``<root>/g<g>``; inside it, a slot's index is written as
g+1 base-36 digits, all but the last naming nested directories and the last naming the file inside the leaf directory::

    slot 5      -> g0/5.<file id>                   (generation 0: 36 slots)
    slot 40     -> g1/0/4.<file id>                 (generation 1: 1,296 slots; index 4 = "04")
    slot 2000   -> g2/0/i/k.<file id>               (generation 2: 46,656 slots; index 668 = "0ik")

So no directory ever holds more than 36 entries (the root holds one per generation), depth grows with the logarithm of
the file count, a slot's path never changes as the node grows, and the smallest free slot is reused after a delete.
A file being written sits in its own slot as ``<digit>.<file id>.part`` and is renamed in place when complete, so even
temporary files respect the 36-entry rule. This module only says where files go; writing one (making its directories,
the partial entry, the syncs, the rename) is ``disk.DurableWrite``'s job.

The node finds a file's slot through an in-memory index (file id -> slot), rebuilt at start-up by walking the tree:
file names carry the file id, so the disk alone says what the node holds. Partial files found at start-up belong to
uploads that never finished; they are removed.
"""

from __future__ import annotations

import heapq
import os
import re
from dataclasses import dataclass
from pathlib import Path

FANOUT = 36  # entries per directory: the digits 0-9 and a-z
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_PART = ".part"
_ENTRY = re.compile(r"([0-9a-z])\.([0-9]+)(\.part)?")
_GENERATION = re.compile(r"g([0-9]+)")


def slot_path(slot: int) -> tuple[str, ...]:
    """The directories of ``slot`` below the root, and its digit in the leaf: ``("g1", "0", "4")`` for slot 40."""
    generation, index = 0, slot
    while index >= FANOUT ** (generation + 1):
        index -= FANOUT ** (generation + 1)
        generation += 1
    digits = []
    for _ in range(generation + 1):
        index, digit = divmod(index, FANOUT)
        digits.append(_DIGITS[digit])
    return (f"g{generation}", *reversed(digits))


def path_slot(parts: tuple[str, ...]) -> int:
    """The inverse of ``slot_path``."""
    generation = int(parts[0][1:])
    slot = sum(FANOUT ** (g + 1) for g in range(generation))
    index = 0
    for digit in parts[1:]:
        index = index * FANOUT + _DIGITS.index(digit)
    return slot + index


@dataclass(frozen=True, slots=True)
class StoredFile:
    file_id: int
    size: int


class Layout:
    """The slots of one data directory: which file id sits where, and which slots are free."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._slots: dict[int, int] = {}  # file id -> slot, complete files only
        self._writing: dict[int, int] = {}  # file id -> slot, files being written
        self._doomed: set[int] = set()  # files removed while being written: abandoned instead of committed
        self._free: list[int] = []  # heap of free slots below _next
        self._next = 0  # every slot from here on is free

    def load(self) -> list[StoredFile]:
        """Rebuild the index from the disk, remove partial files, and return what the node holds."""
        self.root.mkdir(parents=True, exist_ok=True)
        held: list[StoredFile] = []
        used: set[int] = set()
        for directory, _subdirs, names in os.walk(self.root):
            relative = Path(directory).relative_to(self.root).parts
            if not relative or not _GENERATION.fullmatch(relative[0]):
                continue
            for name in names:
                match = _ENTRY.fullmatch(name)
                if match is None:
                    continue
                path = Path(directory, name)
                if match.group(3):
                    path.unlink()
                    continue
                slot = path_slot((*relative, match.group(1)))
                file_id = int(match.group(2))
                self._slots[file_id] = slot
                used.add(slot)
                held.append(StoredFile(file_id, path.stat().st_size))
        self._next = max(used, default=-1) + 1
        self._free = [slot for slot in range(self._next) if slot not in used]
        heapq.heapify(self._free)
        return held

    def file_ids(self) -> list[int]:
        """The ids of every complete file, in order."""
        return sorted(self._slots)

    def path(self, file_id: int) -> Path | None:
        """Where the complete file ``file_id`` is, or None if the node does not hold it."""
        slot = self._slots.get(file_id)
        return None if slot is None else self._file(slot, file_id)

    def begin(self, file_id: int) -> Path:
        """Take a slot for a new file; return the path it will have once complete (``partial_path`` gives the path it
        is written at). The caller makes the directories, writes, and calls ``committed`` or ``abandon``."""
        if file_id in self._slots or file_id in self._writing:
            raise FileExistsError(f"file id {file_id} is already stored or being written")
        slot = heapq.heappop(self._free) if self._free else self._take_next()
        self._writing[file_id] = slot
        return self._file(slot, file_id)

    def committed(self, file_id: int) -> bool:
        """The partial file has been renamed to its final path: it is held now. False if it was removed while being
        written: then the caller removes it."""
        self._slots[file_id] = self._writing.pop(file_id)
        if file_id in self._doomed:
            self._doomed.discard(file_id)
            return False
        return True

    def abandon(self, file_id: int) -> None:
        """A write failed and its partial file is gone: free its slot."""
        self._doomed.discard(file_id)
        heapq.heappush(self._free, self._writing.pop(file_id))

    def remove(self, file_id: int) -> bool:
        """Delete a complete file and free its slot (a file still being written is doomed: it will not be committed);
        False if the node did not hold it."""
        if file_id in self._writing:
            self._doomed.add(file_id)
            return True
        slot = self._slots.pop(file_id, None)
        if slot is None:
            return False
        self._file(slot, file_id).unlink(missing_ok=True)
        heapq.heappush(self._free, slot)
        return True

    def _take_next(self) -> int:
        slot = self._next
        self._next += 1
        return slot

    def _file(self, slot: int, file_id: int) -> Path:
        *directories, digit = slot_path(slot)
        return self.root.joinpath(*directories, f"{digit}.{file_id}")


def partial_path(final: Path) -> Path:
    """Where a file is written before it is renamed to ``final``: in its own slot, so it counts as one of the 36."""
    return final.with_name(final.name + _PART)

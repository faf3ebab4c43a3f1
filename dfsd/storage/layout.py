"""How a storage node lays files out on its disk.

Theory of operation: every stored file occupies one *slot*, numbered from 0. Slots are grouped in generations:
generation g holds 36**(g+1) slots and lives in the directory ``<root>/g<g>``; inside it, a slot's index is written as
g+1 base-36 digits, all but the last naming nested directories and the last naming the file inside the leaf directory::

    slot 5      -> g0/5.<file id>                   (generation 0: 36 slots)
    slot 40     -> g1/0/4.<file id>                 (generation 1: 1,296 slots; index 4 = "04")
    slot 2000   -> g2/0/i/k.<file id>               (generation 2: 46,656 slots; index 668 = "0ik")

So no directory ever holds more than 36 entries (the root holds one per generation), depth grows with the logarithm of
the file count, a slot's path never changes as the node grows, and the smallest free slot is reused after a delete.
A file streamed to the node is written in its own slot as ``<digit>.<file id>.part`` and renamed in place when
complete, so even temporary files respect the 36-entry rule; a small file given whole is written at its final name
from the start. This module only says where files go; writing one (making its directories, the partial entry, the
syncs, the rename) is ``disk.DurableWrite``'s job, and its docstring says why the two differ.

The node finds a file's slot through an in-memory index (file id -> slot), rebuilt at start-up by walking the tree:
file names carry the file id, so the disk alone says what the node holds. Partial files found at start-up belong to
uploads that never finished; they are removed. A small file that a crash cut short sits at its final name and is held
like any other: the manager never recorded it (a node answers ``stored`` only once a file is durable), so it is an
orphan that the manager has removed when the node registers.

Anything else in the tree is *foreign*: an entry dfsd did not make (a file copied in by hand, ``lost+found``, a
``g1/5.17`` at the wrong depth). The node never counts, serves or deletes it, and does not look inside a foreign
directory (it counts as one entry), but reports how many there are (``foreign``). A foreign entry still takes one of
its directory's 36 entries, so each one takes a *position* of that directory out of use: the position it would collide
with (a file named ``3`` where directory ``3`` would go), else the highest free one. A position out of use is a range
of slots that the node skips. A directory that already holds more than 36 entries (a file copied into a full one)
gives up each of its own slots freed by a delete until it is back to 36.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
from dataclasses import dataclass
from pathlib import Path

FANOUT = 36  # entries per directory: the digits 0-9 and a-z
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_PART = ".part"
_ENTRY = re.compile(r"([0-9a-z])\.([0-9]+)(\.part)?")
_GENERATION = re.compile(r"g(0|[1-9][0-9]?)")
_SUBDIRECTORY = re.compile(r"[0-9a-z]")


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


def _generation_start(generation: int) -> int:
    return sum(FANOUT ** (g + 1) for g in range(generation))


def position_slots(parts: tuple[str, ...], position: int) -> tuple[int, int]:
    """The slots under entry ``position`` (0-35) of the directory ``parts`` below the root, as [start, end): a whole
    generation for the root, a sub-tree or a single slot below it."""
    if not parts:
        return _generation_start(position), _generation_start(position + 1)
    generation = int(parts[0][1:])
    prefix = 0
    for digit in (*parts[1:], _DIGITS[position]):
        prefix = prefix * FANOUT + _DIGITS.index(digit)
    below = FANOUT ** (generation + 1 - len(parts))  # slots under each entry of this directory
    start = _generation_start(generation) + prefix * below
    return start, start + below


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
        self.foreign: list[Path] = []  # entries that are not dfsd's, relative to the root: never touched
        self.overfull: list[Path] = []  # directories holding more than FANOUT entries, foreign ones included
        self._skipped: dict[int, int] = {}  # start -> end of each range of slots given up to foreign entries
        self._surplus: dict[tuple[str, ...], int] = {}  # leaf directory -> slots of its own to give up when freed
        self._slots: dict[int, int] = {}  # file id -> slot, complete files only
        self._writing: dict[int, int] = {}  # file id -> slot, files being written
        self._doomed: set[int] = set()  # files removed while being written: abandoned instead of committed
        self._free: list[int] = []  # heap of free slots below _next
        self._next = 0  # every slot from here on is free
        self._leaves: dict[int, str] = {}  # slot // FANOUT -> the path of that leaf directory, as text

    def load(self) -> list[StoredFile]:
        """Rebuild the index from the disk, remove partial files, and return what the node holds; note the foreign
        entries (``foreign``) and take their directory positions out of use."""
        self.root.mkdir(parents=True, exist_ok=True)
        held: list[StoredFile] = []
        self.foreign, self.overfull, self._skipped, self._surplus = [], [], {}, {}
        self._scan((), held)
        used = set(self._slots.values())
        self._next = max(used, default=-1) + 1
        skipped: set[int] = set()
        for start, end in self._skipped.items():
            skipped.update(range(start, min(end, self._next)))
        self._free = [slot for slot in range(self._next) if slot not in used and slot not in skipped]
        heapq.heapify(self._free)
        return held

    def _scan(self, parts: tuple[str, ...], held: list[StoredFile]) -> None:
        """Index the directory ``parts`` (below the root) and, depth first, the directories of ours inside it."""
        directory = self.root.joinpath(*parts)
        leaf = bool(parts) and len(parts) == int(parts[0][1:]) + 1  # its entries are files, not directories
        occupied: set[int] = set()  # positions holding an entry of ours
        colliding: set[int] = set()  # positions a foreign entry's name would clash with
        foreign = 0
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda entry: entry.name):
                position, ours = _classify(entry, parts, leaf)
                if not ours:
                    foreign += 1
                    self.foreign.append(Path(*parts, entry.name))
                    if position is not None:
                        colliding.add(position)
                    continue
                assert position is not None
                if not leaf:
                    occupied.add(position)
                    self._scan((*parts, entry.name), held)
                    continue
                match = _ENTRY.fullmatch(entry.name)
                assert match is not None
                if match.group(3):
                    os.unlink(entry.path)
                    continue
                occupied.add(position)
                file_id = int(match.group(2))
                self._slots[file_id] = path_slot((*parts, match.group(1)))
                held.append(StoredFile(file_id, entry.stat().st_size))
        if foreign:
            self._give_positions_up(parts, leaf, foreign, occupied, colliding)

    def _give_positions_up(
        self, parts: tuple[str, ...], leaf: bool, foreign: int, occupied: set[int], colliding: set[int]
    ) -> None:
        """Take ``foreign`` positions of directory ``parts`` out of use: those a foreign name clashes with, then the
        highest free ones. What cannot be given up now (the directory is over-full) a leaf gives up as it frees."""
        free = [position for position in range(FANOUT) if position not in occupied]
        chosen = [position for position in free if position in colliding]
        chosen += [position for position in reversed(free) if position not in colliding][: foreign - len(chosen)]
        for position in chosen:
            start, end = position_slots(parts, position)
            self._skipped[start] = end
        surplus = foreign - len(chosen)
        if surplus > 0:
            self.overfull.append(Path(*parts))
            if leaf:
                self._surplus[parts] = surplus

    def file_ids(self) -> list[int]:
        """The ids of every complete file, in order."""
        return sorted(self._slots)

    def path(self, file_id: int) -> Path | None:
        """Where the complete file ``file_id`` is, or None if the node does not hold it."""
        location = self.location(file_id)
        return None if location is None else Path(location)

    def location(self, file_id: int) -> str | None:
        """``path`` as text, for the hot paths (a read, a delete): no ``Path`` is built, and a slot's directory is
        worked out once per leaf directory."""
        slot = self._slots.get(file_id)
        return None if slot is None else self._file(slot, file_id)

    def begin(self, file_id: int) -> str:
        """Take a slot for a new file; return the path it will have once complete, as text, as ``location`` (a write
        is a hot path too; ``partial_path`` gives the path a stream is written at). The caller makes the directories,
        writes, and calls ``committed`` or ``abandon``."""
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(slot, file_id))
        if not self._give_up(slot):
            heapq.heappush(self._free, slot)
        return True

    def _give_up(self, slot: int) -> bool:
        """Whether the freed ``slot`` stays out of use: its directory holds more than FANOUT entries with it."""
        leaf = slot_path(slot)[:-1]
        surplus = self._surplus.pop(leaf, 0)
        if surplus > 1:
            self._surplus[leaf] = surplus - 1
        return surplus > 0

    def _take_next(self) -> int:
        while self._next in self._skipped:  # a position given up to a foreign entry
            self._next = self._skipped[self._next]
        slot = self._next
        self._next += 1
        return slot

    def _file(self, slot: int, file_id: int) -> str:
        leaf, position = divmod(slot, FANOUT)  # generations start at multiples of FANOUT: a leaf is FANOUT slots
        directory = self._leaves.get(leaf)
        if directory is None:
            directory = self._leaves[leaf] = os.path.join(self.root, *slot_path(slot)[:-1])
        return f"{directory}/{_DIGITS[position]}.{file_id}"


def partial_path(final: str) -> str:
    """Where a file is written before it is renamed to ``final``: in its own slot, so it counts as one of the 36."""
    return final + _PART


def _classify(entry: os.DirEntry[str], parts: tuple[str, ...], leaf: bool) -> tuple[int | None, bool]:
    """The directory position ``entry`` holds or clashes with (None: none), and whether it is one of ours."""
    if not parts:
        match = _GENERATION.fullmatch(entry.name)
        position = int(match.group(1)) if match and int(match.group(1)) < FANOUT else None
        return position, position is not None and entry.is_dir(follow_symlinks=False)
    if not leaf:
        position = _DIGITS.index(entry.name) if _SUBDIRECTORY.fullmatch(entry.name) else None
        return position, position is not None and entry.is_dir(follow_symlinks=False)
    match = _ENTRY.fullmatch(entry.name)
    position = _DIGITS.index(match.group(1)) if match else None
    return position, position is not None and entry.is_file(follow_symlinks=False)

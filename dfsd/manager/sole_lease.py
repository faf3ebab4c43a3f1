"""The sole lease: when a manager on a shared database (PostgreSQL) may trust names it keeps in memory, and when it may
write to ``files`` at all. Sans-I/O: the caller reads the lease row, passes it here with the times it read from its
own clock, and writes back what this decides.

Why: a manager alone on its database sees every change to ``files``, because it makes them; it could answer a lookup by
name from memory (``name_cache.py``) and spare the database a query per read. The danger is a second manager it does
not know of yet, deleting or replacing a name the first still answers from memory. The promise to keep is the read
cache's (``read_cache.py``): a delete or replace acknowledged through any manager is never followed by a read that
sees the old state.

Theory of operation. The database holds one row, ``sole_lease``: a ``generation``, the ``holder`` (the manager that may
keep names in memory under that generation, or none) and ``ended`` (the holder whose turn the last change of
generation ended, until that has certainly run out; or none). Each manager renews its view every TICK in a
transaction that locks the row (``FOR UPDATE``) and learns whether another manager is up (``managers``):

- The generation it knows, unchanged: its rights are renewed until ``sent + DURATION - DRIFT``, ``sent`` being its
  own clock read *before* the transaction began. Held by none and this manager alone, it takes the lease: a new
  generation, itself the holder.
- Another generation (someone changed it, or this manager just started): whatever it kept in memory is void at once.
  Held by another manager, it ends that turn: a new generation, held by itself if alone, else by none, ``ended``
  naming the old holder. Held by none, it adopts the generation as it is.

The fence. Time alone cannot bound when a write reaches the database: one sent in time may arrive late (the
database slow, the link stalled, the writer frozen), after another manager took the lease and began answering from
memory. So every transaction that writes to ``files`` locks the row itself, in share mode, until it ends, and does
nothing unless the row is still at the generation the write was sent under and held by nobody or the writer
(``store_postgres.py``, ``FENCE_SQL``). A change of the row waits for those locks, and a fence for a change under way:
each such transaction comes wholly before a change, or checks the row that change made. So a write is *made* only
under the generation it was sent under, and a late one is as safe as one in time, whenever its answer arrives
(refused, it did nothing, and it is sent again under the generation a renewal brings in).

The rights. A manager sends writes to ``files`` only while its rights last (``may_write``: the writes wait, see
``store_postgres.py``). The holder answers names from memory only while its rights last and, after taking the lease,
only once DURATION has passed since the commit that took it (``may_cache``). A manager that ended another's turn, or
adopted a generation whose change ended a holder other than itself, writes nothing until DURATION has passed since
its commit (taking a lease held by none ends no turn: the taker writes at once). Why that is enough, with no clock
shared between hosts (each measures only its own intervals, and DRIFT covers how far two clocks' rates may differ
over DURATION):

- The holder H's rights were last renewed by a transaction that read the row before any later change of generation
  committed, and began after ``sent``: they end by ``sent + DURATION - DRIFT``, before that change + DURATION.
- A write made after the change that ended H's turn was made under that generation or a later one (the fence), so
  it was sent by a manager that waited until DURATION after that change (made or seen): after H stopped answering
  from memory. H itself, seeing its turn ended, drops its memory before it writes on. So H's memory, while used, has
  seen every write: its own (applied or forgotten as they are answered, ``name_cache.py``) and none other.
- The new holder's memory starts empty, DURATION after the change that took the lease: every write made under an
  older generation was made before that change (the fence), so its lookups see them; one made after it is its own.

The fence alone would not do: the row no longer names a holder whose turn a change ended, so only the waits keep
other managers' writes out of that holder's memory; and the waits alone would not do for a write that arrives late.

A manager that cannot renew (the database down, the link cut) stops answering from memory, and writing, when its
rights run out; it resumes after a renewal. When the other managers die (their records lapse), the survivor takes
the lease at its next renewal, its memory empty. A holder shutting down cleanly gives the lease back (holder none):
the next manager to start need not wait. SQLite has none of this: one manager per database file, always alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How long a renewal's rights last, and how long a manager that changed the generation waits before it writes.
# Short, since a second manager's writes wait this long when it starts beside a holder; several TICKs long
# (``coordination.py``: 0.5 s), so that one slow renewal does not interrupt the holder.
DURATION = 2.0

# Taken off every right, for the rates of two hosts' clocks: monotonic clocks under NTP differ by at most 500 ppm
# (1 ms over DURATION); this is a hundred times that, and small beside DURATION.
DRIFT = 0.1


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The ``sole_lease`` row: the generation, who may keep names in memory under it, and whose turn it ended."""

    generation: int
    holder: str | None
    ended: str | None


@dataclass(frozen=True, slots=True)
class _Grant:
    """What a renewal grants once its transaction commits."""

    until: float  # rights last until then
    generation: int | None  # the generation it leaves this manager in
    holding: bool  # the holder of that generation
    wait: bool  # writes begin only DURATION after the commit


class SoleLease:
    """One manager's view of the sole lease, and its rights. Times are seconds of the manager's own clock."""

    def __init__(self, me: str, duration: float = DURATION, drift: float = DRIFT) -> None:
        self.me = me
        self.duration = duration
        self.drift = drift
        self.generation: int | None = None  # the one it last saw; None before its first renewal, or forgotten
        self.holding = False  # the holder under ``generation``
        self._until = -math.inf  # its rights last until then
        self._writes_from = math.inf  # it writes to ``files`` from then
        self._cache_from = math.inf  # as the holder, it answers from memory from then
        self._pending: _Grant | None = None  # what ``step`` decided, granted by ``committed``

    def may_write(self, now: float) -> bool:
        return self._writes_from <= now < self._until

    def may_cache(self, now: float) -> bool:
        return self.holding and self._cache_from <= now < self._until

    def writes_from(self) -> float:
        """When its writes may begin (``math.inf``: not before a renewal grants it)."""
        return self._writes_from

    def _forget(self) -> bool:
        """Rights and memory are void, and the next renewal treats the row as new (the generation changed, or the
        lease is given back). True if names were kept in memory (the caller drops them)."""
        held = self.holding
        self.generation = None
        self.holding = False
        self._until = -math.inf
        self._writes_from = self._cache_from = math.inf
        self._pending = None
        return held

    def step(self, row: LeaseRow, alone: bool, sent: float) -> tuple[LeaseRow | None, bool]:
        """A renewal read ``row`` (locked) in a transaction begun at ``sent``; ``alone``: no other manager is up.
        Returns the row to write in that transaction (None: none) and whether the names kept in memory are void now
        (the caller drops them before anything else). What it grants waits for ``committed``."""
        until = sent + self.duration - self.drift
        if row.generation == self.generation and row.holder in (None, self.me):
            self._pending = _Grant(until, row.generation, row.holder == self.me, False)
            if row.holder is None and alone:  # take it: names in memory from DURATION after this commit
                self._pending = _Grant(until, row.generation + 1, True, False)
                return LeaseRow(row.generation + 1, self.me, None), False
            if row.holder is None and row.ended is not None and self.may_write(sent):
                return LeaseRow(row.generation, None, None), False  # the turn it ended has certainly run out
            return None, False
        void = self._forget()
        if row.holder is not None:  # another's turn (or its own, in a state it no longer knows): end it
            holder = self.me if alone else None
            self._pending = _Grant(until, row.generation + 1, alone, True)
            return LeaseRow(row.generation + 1, holder, row.holder), void
        wait = row.ended is not None and row.ended != self.me  # that holder may still answer from memory a while
        if alone:
            self._pending = _Grant(until, row.generation + 1, True, wait)
            return LeaseRow(row.generation + 1, self.me, None), void
        self._pending = _Grant(until, row.generation, False, wait)
        return None, void

    def committed(self, done: float) -> None:
        """The renewal's transaction committed (``done``: the clock read after it did): grant what it decided."""
        grant, self._pending = self._pending, None
        if grant is None:
            return
        if grant.generation != self.generation:
            self.generation = grant.generation
            self.holding = grant.holding
            self._cache_from = done + self.duration if grant.holding else math.inf
        self._until = grant.until
        if grant.wait:
            self._writes_from = done + self.duration
        elif self._writes_from == math.inf:
            self._writes_from = done

    def failed(self) -> None:
        """The renewal's transaction failed: nothing it decided is granted (what ``step`` voided stays void)."""
        self._pending = None

    def released(self) -> LeaseRow | None:
        """Shutting down: stop answering from memory, and the row that gives the lease back (None: not held), to be
        written only if it is still this manager's, at this generation."""
        if not self.holding or self.generation is None:
            return None
        generation = self.generation
        self._forget()
        return LeaseRow(generation, None, None)

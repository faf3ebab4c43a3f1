"""The sole lease's rules (``dfsd/manager/sole_lease.py``), sans I/O: a row in a list stands for the database's, and
times are numbers passed in.

The invariants, checked case by case and then over random schedules: while one manager may answer names from memory,
no other manager may send writes to ``files``; and a write that reaches the database, however late, is either refused
by its fence or seen by every memory in use from then on.
"""

from __future__ import annotations

import random

import pytest

from dfsd.manager.sole_lease import DRIFT, DURATION, LeaseRow, SoleLease


class Database:
    """The ``sole_lease`` row, and a renewal as one transaction that holds its lock from ``locked`` to ``done``."""

    def __init__(self) -> None:
        self.row = LeaseRow(0, None, None)

    def renew(self, lease: SoleLease, *, alone: bool, sent: float, done: float | None = None) -> bool:
        """One renewal begun at ``sent`` and committed at ``done`` (None: it failed); True if names were void."""
        write, void = lease.step(self.row, alone, sent)
        if done is None:
            lease.failed()
            return void
        if write is not None:
            self.row = write
        lease.committed(done)
        return void

    def admits(self, generation: int | None, writer: str) -> bool:
        """The fence of a write to ``files`` sent under ``generation`` by ``writer``, as the database checks it when
        the write arrives (``store_postgres.FENCE_SQL``), the row locked until the write commits."""
        return generation == self.row.generation and self.row.holder in (None, writer)


def test_the_first_manager_takes_the_lease_writes_at_once_and_answers_from_memory_after_duration() -> None:
    db, a = Database(), SoleLease("a")
    db.renew(a, alone=True, sent=10.0, done=10.01)
    assert db.row == LeaseRow(1, "a", None)
    assert a.may_write(10.02)
    assert not a.may_cache(10.02)
    assert not a.may_cache(10.01 + DURATION - 0.001)
    db.renew(a, alone=True, sent=10.5, done=10.51)
    assert a.may_cache(10.01 + DURATION)


def test_rights_run_out_without_renewals_and_come_back_with_one() -> None:
    db, a = Database(), SoleLease("a")
    for sent in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5):
        db.renew(a, alone=True, sent=sent, done=sent + 0.01)
    assert a.may_cache(2.6) and a.may_write(2.6)
    expiry = 2.5 + DURATION - DRIFT
    assert not a.may_cache(expiry) and not a.may_write(expiry)
    db.renew(a, alone=True, sent=9.0, done=9.01)  # the database was back: nobody changed the generation meanwhile
    assert a.may_cache(9.02) and a.may_write(9.02)
    assert db.row == LeaseRow(1, "a", None)


def test_a_failed_renewal_grants_nothing() -> None:
    db, a = Database(), SoleLease("a")
    db.renew(a, alone=True, sent=0.0, done=None)
    assert not a.may_write(0.1)
    assert a.generation is None


def test_a_newcomer_ends_the_holders_turn_and_writes_only_once_it_has_run_out() -> None:
    db, a, b = Database(), SoleLease("a"), SoleLease("b")
    for sent in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5):
        db.renew(a, alone=True, sent=sent, done=sent + 0.01)
    db.renew(b, alone=False, sent=2.7, done=2.71)
    assert db.row == LeaseRow(2, None, "a")
    db.renew(b, alone=False, sent=4.5, done=4.51)
    assert not b.may_write(2.71 + DURATION - 0.001)
    assert b.may_write(2.71 + DURATION)
    # a, not yet renewed, still answers from memory until its rights run out: before b writes
    assert a.may_cache(2.72)
    assert not a.may_cache(2.5 + DURATION - DRIFT)
    # a's next renewal finds the turn it held ended: its memory is void, and it writes at once (nobody else has any)
    assert db.renew(a, alone=False, sent=3.0, done=3.01) is True
    assert not a.holding and a.may_write(3.02)
    # b, its wait over, clears ``ended``: a manager starting now need not wait
    db.renew(b, alone=False, sent=5.0, done=5.01)
    assert db.row == LeaseRow(2, None, None)
    c = SoleLease("c")
    db.renew(c, alone=False, sent=5.5, done=5.51)
    assert c.may_write(5.52)


def test_a_second_newcomer_waits_for_the_turn_the_first_ended() -> None:
    db, a, b, c = Database(), SoleLease("a"), SoleLease("b"), SoleLease("c")
    db.renew(a, alone=True, sent=0.0, done=0.01)
    db.renew(b, alone=False, sent=0.2, done=0.21)
    db.renew(c, alone=False, sent=0.3, done=0.31)
    assert db.row == LeaseRow(2, None, "a")  # c adopted b's generation: no second change
    db.renew(c, alone=False, sent=2.0, done=2.01)
    assert not c.may_write(0.31 + DURATION - 0.001) and c.may_write(0.31 + DURATION)


def test_the_survivor_takes_the_lease_back_with_empty_memory() -> None:
    db, a, b = Database(), SoleLease("a"), SoleLease("b")
    db.renew(a, alone=True, sent=0.0, done=0.01)
    db.renew(b, alone=False, sent=0.2, done=0.21)
    db.renew(a, alone=False, sent=0.5, done=0.51)
    db.renew(a, alone=True, sent=6.0, done=6.01)  # b's record lapsed: a is alone
    assert db.row == LeaseRow(3, "a", None)
    assert a.may_write(6.02) and not a.may_cache(6.02)
    db.renew(a, alone=True, sent=8.0, done=8.01)
    assert a.may_cache(6.01 + DURATION)


def test_a_write_that_arrives_after_another_manager_took_the_lease_is_refused_by_its_fence() -> None:
    db, a, b = Database(), SoleLease("a"), SoleLease("b")
    db.renew(a, alone=False, sent=0.0, done=0.01)
    db.renew(b, alone=False, sent=0.1, done=0.11)
    assert b.may_write(0.2)
    sent_under = b.generation  # b's delete leaves, and stalls on the way; b dies
    db.renew(a, alone=True, sent=6.0, done=6.01)  # b's record lapsed: a takes the lease
    db.renew(a, alone=True, sent=8.0, done=8.01)
    assert a.may_cache(8.02)
    assert not db.admits(sent_under, "b")  # arriving now, it does nothing: a's memory stays exact


def test_a_write_that_arrives_before_the_lease_changes_is_made_and_the_taker_sees_it() -> None:
    """The fence holds the row until the write commits, so a change waits: the taker's memory starts after it."""
    db, a, b = Database(), SoleLease("a"), SoleLease("b")
    db.renew(a, alone=False, sent=0.0, done=0.01)
    db.renew(b, alone=False, sent=0.1, done=0.11)
    assert db.admits(b.generation, "b")  # made, late as it may be: the generation it was sent under is the row's
    db.renew(a, alone=True, sent=6.0, done=6.01)
    assert not a.may_cache(6.01 + DURATION - 0.001)


def test_a_write_sent_under_a_turn_that_ended_is_refused_even_with_the_lease_held_by_none() -> None:
    """Only the generation tells a write sent before a change: a holder whose turn a newcomer ended may still answer
    from memory while the row is held by none."""
    db, a, b, c = Database(), SoleLease("a"), SoleLease("b"), SoleLease("c")
    db.renew(b, alone=False, sent=0.0, done=0.01)
    db.renew(a, alone=False, sent=0.1, done=0.11)
    sent_under = b.generation  # b's write stalls; b dies
    db.renew(a, alone=True, sent=6.0, done=6.01)  # a takes the lease
    db.renew(a, alone=True, sent=8.0, done=8.01)
    db.renew(c, alone=False, sent=8.2, done=8.21)  # c starts: a's turn ends, the row is held by none
    assert db.row.holder is None and a.may_cache(8.3)
    assert not db.admits(sent_under, "b")


def test_a_holder_shutting_down_gives_the_lease_back() -> None:
    db, a = Database(), SoleLease("a")
    db.renew(a, alone=True, sent=0.0, done=0.01)
    row = a.released()
    assert row == LeaseRow(1, None, None)
    assert not a.may_cache(0.02) and not a.may_write(0.02)


@pytest.mark.parametrize("seed", range(200))
def test_no_manager_writes_while_another_answers_from_memory(seed: int) -> None:
    """Random schedules of renewals (some failing, some slow) by three managers that come and go on one clock: at no
    instant does one manager hold rights to answer from memory while another holds rights to write."""
    rng = random.Random(seed)
    db = Database()
    leases = {name: SoleLease(name) for name in "abc"}
    up = {name: rng.random() < 0.7 for name in leases}
    now = 0.0
    for _ in range(60):
        now += rng.uniform(0.0, 1.2)
        name = rng.choice(list(leases))
        if rng.random() < 0.1:
            up[name] = not up[name]
            if not up[name]:
                leases[name] = SoleLease(name + str(now))  # a restart comes back as a new manager
                continue
        if not up[name]:
            continue
        lease = leases[name]
        others = any(up[other] for other in leases if other != name)
        alone = not others if rng.random() < 0.8 else rng.random() < 0.5  # records seen late or early
        sent = now
        locked = now + rng.uniform(0.0, 0.3)
        done = None if rng.random() < 0.1 else locked + rng.uniform(0.0, 0.3)
        for t in (sent, locked):  # the instants before the renewal commits: the rights in force then
            _check(leases, t)
        db.renew(lease, alone=alone, sent=sent, done=done)
        now = max(now, done or locked)
        for step in range(30):
            _check(leases, now + step * 0.1)


@pytest.mark.parametrize("seed", range(200))
def test_a_write_that_arrives_late_never_outdates_a_memory_in_use(seed: int) -> None:
    """Random schedules as above, on a clock that only goes forward, with writes to ``files`` that each manager sends
    while it may: most arrive at once, some seconds late (a stalled link), some after their sender died. Every write
    the fence lets through is seen by every memory answering from then on: no manager but its writer held the lease
    when it arrived, or that manager answers from memory no more under that turn."""
    rng = random.Random(seed)
    db = Database()
    leases = {name: SoleLease(name) for name in "abc"}
    up = {name: rng.random() < 0.7 for name in leases}
    arriving: list[tuple[float, str, int | None]] = []  # (when, writer, the generation it was sent under)
    outdated: set[tuple[str, int | None]] = set()  # (manager, generation): turns whose memory a write outdated

    def land(until: float) -> None:
        for write in sorted(write for write in arriving if write[0] <= until):
            arriving.remove(write)
            _, writer, generation = write
            if db.admits(generation, writer):
                # its writer's own memory applies it as it is answered; every other memory held now is outdated
                outdated.update((x.me, x.generation) for x in leases.values() if x.holding and x.me != writer)

    def check(t: float) -> None:
        land(t)
        for lease in leases.values():
            assert not (lease.may_cache(t) and (lease.me, lease.generation) in outdated), (t, lease.me)

    now = 0.0
    for _ in range(80):
        step = rng.uniform(0.0, 1.2)
        for tick in range(int(step / 0.1)):
            check(now + tick * 0.1)
        now += step
        name = rng.choice(list(leases))
        if rng.random() < 0.1:
            up[name] = not up[name]
            if not up[name]:
                leases[name] = SoleLease(name + str(now))  # its writes under way may still arrive
                continue
        if not up[name]:
            continue
        lease = leases[name]
        if lease.may_write(now) and rng.random() < 0.7:
            late = rng.uniform(0.0, 0.1) if rng.random() < 0.6 else rng.uniform(0.0, 8.0)
            arriving.append((now + late, lease.me, lease.generation))
        others = any(up[other] for other in leases if other != name)
        alone = not others if rng.random() < 0.8 else rng.random() < 0.5
        locked = now + rng.uniform(0.0, 0.3)
        done = None if rng.random() < 0.1 else locked + rng.uniform(0.0, 0.3)
        check(locked)  # the writes that arrive before the renewal locks the row come before its change
        db.renew(lease, alone=alone, sent=now, done=done)
        now = max(now, done or locked)
        check(now)  # those that arrived while it held the row wait for it, and meet its change
    check(now + 10.0)


def _check(leases: dict[str, SoleLease], t: float) -> None:
    caching = [name for name, lease in leases.items() if lease.may_cache(t)]
    writing = [name for name, lease in leases.items() if lease.may_write(t)]
    assert len(caching) <= 1
    assert not caching or writing in ([], caching), (t, caching, writing)

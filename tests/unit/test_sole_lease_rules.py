"""The sole lease's rules (``dfsd/manager/sole_lease.py``), sans I/O: a row in a list stands for the database's, and
times are numbers passed in.

The invariant, checked case by case and then over random schedules: while one manager may answer names from memory,
no other manager may write to ``files``.
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


def test_a_late_answer_is_acknowledged_only_within_the_rights_it_was_sent_under() -> None:
    db, a = Database(), SoleLease("a")
    db.renew(a, alone=True, sent=0.0, done=0.01)
    generation = a.generation
    assert a.wrote_in_time(generation, 1.0)
    assert not a.wrote_in_time(generation, DURATION)
    db.renew(a, alone=True, sent=0.5, done=0.51)  # takes nothing new: same generation, rights renewed
    assert a.wrote_in_time(generation, DURATION)


def test_a_forgotten_generation_ends_the_holders_turn_at_the_next_renewal() -> None:
    db, a, b = Database(), SoleLease("a"), SoleLease("b")
    db.renew(b, alone=False, sent=0.0, done=0.01)
    db.renew(a, alone=True, sent=0.1, done=0.11)
    assert db.row == LeaseRow(1, "a", None)
    b.forget()  # b's write was answered too late to be trusted
    db.renew(b, alone=False, sent=0.5, done=0.51)
    assert db.row == LeaseRow(2, None, "a")
    assert not b.may_write(0.51 + DURATION - 0.001)


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
        if rng.random() < 0.05:
            lease.forget()
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


def _check(leases: dict[str, SoleLease], t: float) -> None:
    caching = [name for name, lease in leases.items() if lease.may_cache(t)]
    writing = [name for name, lease in leases.items() if lease.may_write(t)]
    assert len(caching) <= 1
    assert not caching or writing in ([], caching), (t, caching, writing)

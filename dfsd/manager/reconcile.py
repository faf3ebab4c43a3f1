"""Reconciliation: what a registering node holds against what the manager's records say it should hold.

A pure function over sets of file ids, so every case can be tested on its own:

- recorded and held: available (and *found* again if it had been marked lost);
- recorded but not held: *lost* — reported loudly, never served as if present, never silently dropped;
- held but not recorded on this node: an *orphan* (an upload that never finished, a delete made while the node was
  down, the old copy of a finished move), to be removed from the node — except ids still in flight (an upload or a
  move under way), which are not orphans yet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reconciliation:
    lost: list[int]  # recorded here, not held: mark lost
    found: list[int]  # held again after having been marked lost
    orphans: list[int]  # held, recorded nowhere on this node: remove from the node


def reconcile(recorded: set[int], recorded_lost: set[int], held: set[int], in_flight: set[int]) -> Reconciliation:
    return Reconciliation(
        lost=sorted(recorded - held - recorded_lost),
        found=sorted(recorded_lost & held),
        orphans=sorted(held - recorded - in_flight),
    )

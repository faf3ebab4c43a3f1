"""The names a manager alone on PostgreSQL keeps in memory (``dfsd/manager/name_cache.py``): an answer older than a
write that forgets is never kept, writes forget by name and by file id, and the bound is memory, least recently used
out first."""

from __future__ import annotations

from dfsd.manager.name_cache import NameCache, charge
from dfsd.manager.store import FileRecord


def record(name: str, file_id: int, meta: dict[str, str] | None = None) -> FileRecord:
    return FileRecord(file_id, name, 100, 10, bytes(32), 1.0, None, meta)


def test_a_lookup_begun_before_a_write_that_forgets_is_not_kept() -> None:
    names = NameCache()
    since = names.epoch
    names.forget(["other"])  # any write answered meanwhile: the lookup's answer may be older than it
    names.add(record("a", 1), since)
    assert names.get("a") is None
    names.add(record("a", 1), names.epoch)
    assert names.get("a") == record("a", 1)


def test_writes_forget_by_name_and_by_file_id() -> None:
    names = NameCache()
    for index, name in enumerate("abc"):
        names.add(record(name, index), names.epoch)
    names.forget(["a"])
    names.forget(ids=[2])
    assert [names.get(name) for name in "abc"] == [None, record("b", 1), None]
    names.clear()
    assert len(names) == 0 and names.used == 0


def test_a_name_written_again_keeps_only_its_new_record() -> None:
    names = NameCache()
    names.add(record("a", 1), names.epoch)
    names.add(record("a", 2), names.epoch)
    names.forget(ids=[1])  # the old file's id names nothing kept any more
    assert names.get("a") == record("a", 2)
    assert names.used == charge(record("a", 2))


def test_the_least_recently_used_leave_first_once_the_memory_bound_is_reached() -> None:
    cost = charge(record("n0", 0))
    names = NameCache(capacity=3 * cost)
    for index in range(3):
        names.add(record(f"n{index}", index), names.epoch)
    assert names.get("n0") is not None  # now the most recently used
    names.add(record("n3", 3), names.epoch)
    assert [names.get(f"n{index}") is not None for index in range(4)] == [True, False, True, True]
    assert names.used <= names.capacity


def test_metadata_counts_against_the_bound() -> None:
    assert charge(record("a", 1, {"key": "v" * 1000})) > charge(record("a", 1)) + 1000

"""The group lookup (``dfsd/manager/lookups.py``) on its own, with an in-memory table standing for the database's:
names asked while every lane's query is out share the next query, and a query slow to answer holds up only the
names it carries."""

from __future__ import annotations

import asyncio

from dfsd.manager.lookups import GroupLookup

TABLE = {"a": 1, "b": 2, "c": 3}


async def test_a_lookup_is_answered_while_a_slow_query_holds_the_other_lane() -> None:
    queries: list[tuple[int, list[str]]] = []
    out, slow = asyncio.Event(), asyncio.Event()

    async def fetch(lane: int, names: list[str]) -> dict[str, int]:
        queries.append((lane, names))
        if lane == 0:
            out.set()
            await slow.wait()
        return {name: TABLE[name] for name in names if name in TABLE}

    lookup: GroupLookup[int] = GroupLookup(fetch, lanes=2)
    stuck = asyncio.create_task(lookup.find("a"))
    await out.wait()  # its query is out, on lane 0, and does not answer
    assert await lookup.find("b") == 2  # lane 1
    assert await asyncio.gather(lookup.find("c"), lookup.find("c"), lookup.find("absent")) == [3, 3, None]
    assert not stuck.done()
    slow.set()
    assert await stuck == 1
    await lookup.close()
    assert queries == [(0, ["a"]), (1, ["b"]), (1, ["c", "absent"])]

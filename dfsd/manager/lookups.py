"""Group lookup: the reads of a file by name asked at about the same time go to the database as one query.

A networked database (PostgreSQL) costs a round trip, and work on both sides of it, per query: with many clients
reading at once, that cost, not the lookup itself, bounds the manager's reads. So lookups queue, as writes do for the
group commit (``store.py``): while one query is out, every name asked for joins the next, which goes out as soon as
the first answers. Alone, a lookup costs what it did (one query); under load, one query serves many. A second query
in flight, on a second connection, was measured against this: it halved the names per query and doubled PostgreSQL's
CPU per read, and reads fell from 0.98 to 0.88 of SQLite's rate on a lightly loaded 2-core machine (it helped only on
a heavily loaded one, where a server slow to be scheduled held up every read waiting on its one query).

Each lookup is answered by a query sent after it was asked, so it sees every write committed before it was asked,
as a query of its own would: a name deleted (or replaced) and acknowledged, through any manager, is never found in its
old state by a lookup asked after that. (A manager alone on the database asks most names of its memory instead, and
only the others come here: ``name_cache.py``.)

The same grouping serves a query that many ask at once with no name at all (placement's count of files per node,
``store_postgres.py``): they all ask for one name, and share its next answer. And it serves the holds of uploads
(``store_postgres.py``), each a lookup of its name that claims the name when it finds no file: keyed by the whole hold
(name, file id, node), the holds asked while one statement is out go together in the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Record = TypeVar("Record")

# Names per query at most: a lookup waits for at most this many others (the queue is as long as the requests the
# manager serves at once), and the query's parameter stays small.
MAX_GROUP = 512


class GroupLookup(Generic[Key, Record]):
    """Finds by name (or another key) through ``fetch``, which takes a list of distinct keys and returns what it found
    for each (a key it did not find is missing from its answer)."""

    def __init__(self, fetch: Callable[[list[Key]], Awaitable[dict[Key, Record]]]) -> None:
        self._fetch = fetch
        self._asked: dict[Key, list[asyncio.Future[Record | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def find(self, name: Key) -> Record | None:
        found: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(name, []).append(found)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await found  # cancelled, it is simply not answered (a hold's caller tidies what it may have written)

    async def _run(self) -> None:
        while self._asked:
            names = list(self._asked)[:MAX_GROUP]
            group = {name: self._asked.pop(name) for name in names}
            try:
                found = await self._fetch(names)
            except BaseException as err:
                for future in (future for waiting in group.values() for future in waiting if not future.done()):
                    if isinstance(err, Exception):
                        future.set_exception(err)
                    else:
                        future.cancel()
                if not isinstance(err, Exception):
                    raise
                continue
            for name, waiting in group.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(found.get(name))

    async def close(self) -> None:
        """Wait for the query under way (the lookups still asked get their answers first)."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

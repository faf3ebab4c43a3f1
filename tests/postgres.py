"""The suite's throwaway PostgreSQL servers: dfs-bench's starter (``dfsd.tools.throwaway_postgres``, which knows how
to initdb, start on a free port, run as the ``postgres`` user under root, and stop), plus what only tests need: a fresh
database per test and a statement run from any thread.

The servers skip fsync (``durable=False``): they are thrown away at the end, and the tests check behaviour, not
durability against power loss. Each test gets its own database, created from ``template0`` in a few milliseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools

import asyncpg
from dfsd.tools.throwaway_postgres import ThrowawayPostgres

from dfsd.manager.store import PostgresURL


class PostgresServer(ThrowawayPostgres):
    def __init__(self) -> None:
        super().__init__(durable=False)
        self._names = itertools.count()

    def url(self, database: str) -> PostgresURL:
        return PostgresURL(self.url_for(database))

    def create_database(self) -> PostgresURL:
        """A new, empty database of its own for one test."""
        name = f"test_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement and return its rows (from a thread of its own, so async tests can call this too)."""

        async def run() -> list[tuple[object, ...]]:
            conn = await asyncpg.connect(self.url(database).url)
            try:
                return [tuple(row) for row in await conn.fetch(sql)]
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, run()).result()

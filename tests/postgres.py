"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary directory, started on a free port.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (which the OS package
creates). It listens on 127.0.0.1 only, with its socket in its own directory, trusts local connections, and skips
fsync: it is thrown away at the end, and the tests check behaviour, not durability against power loss.
``pg_ctl start -w`` returns once the server accepts connections, and ``stop`` waits until it has exited, so no process
outlives the session. Each test gets its own database, created from ``template0`` in a few milliseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from dfsd.manager.store import PostgresURL

SUPERUSER = "postgres"


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dfsd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user = _run_as()
        if self._as_user is not None:
            os.chown(self.root, self._as_user.pw_uid, self._as_user.pw_gid)
        self._names = itertools.count()

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server at once, as a crash would (its data stays: ``resume`` starts it again)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start the server again after ``halt``, on the same port with the same data."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", self._options(), "-w", "start"
        )

    def url(self, database: str) -> PostgresURL:
        return PostgresURL(f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}")

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

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            command,
            user=self._as_user.pw_uid if self._as_user else None,
            group=self._as_user.pw_gid if self._as_user else None,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                + (log.read_text()[-3000:] if log.exists() else "")
            )


def _run_as() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise RuntimeError(
            "running as root, the tests start PostgreSQL as the 'postgres' user, and there is none: install the "
            "postgresql package (which creates it), or `useradd --system postgres`"
        ) from None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

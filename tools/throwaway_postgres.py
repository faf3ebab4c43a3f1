"""A throwaway PostgreSQL server: ``initdb`` into a directory of its own, started on a free port, removed at the end.

dfs-bench starts one to run a private cluster's managers on PostgreSQL, and the test suite (``tests/postgres.py``)
starts them for its metadata-store and multi-manager tests: this is the one place that knows how.

Theory of operation. The server listens on 127.0.0.1 only, with its Unix socket in its own directory (so it never
meets a system server's), and trusts local connections: nobody else can reach it, and it is gone after the run.
``pg_ctl start -w`` returns once it accepts connections and ``stop -w`` once it has exited, so no process outlives its
owner. PostgreSQL refuses to run as root, so as root every PostgreSQL program runs as the ``postgres`` user (which the
OS package creates); that user must then be able to reach the directory the server is made in, which is checked first,
so the failure names the directory instead of surfacing as initdb's "Permission denied". ``durable=False`` turns fsync
off, for tests that check behaviour, not durability against power loss; a benchmark keeps PostgreSQL's defaults, so its
commits cost what they cost in production. The only database is initdb's ``postgres``; whoever needs more creates
them through a driver (this module runs programs, it speaks no SQL).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from dfsd.processes import free_ports

SUPERUSER = "postgres"
DATABASE = "postgres"  # the one initdb makes

# Enough for several managers' pools and a test's own connections at once.
MAX_CONNECTIONS = 200

# initdb and pg_ctl take a few seconds; far more than this means the machine or the installation is broken.
COMMAND_TIMEOUT = 120.0


class PostgresFailed(Exception):
    """PostgreSQL could not be set up or started (or stopped): the message says what, with the server's log tail."""


class ThrowawayPostgres:
    """One server: ``start()`` it, give its ``url_for(database)`` to managers, ``stop()`` it (which removes it)."""

    def __init__(self, parent: Path | None = None, *, durable: bool = True) -> None:
        """Make the server's directory in ``parent`` (default: the system's temporary directory)."""
        self._as_user = _run_as()
        if self._as_user is not None:
            blocked = unreachable_ancestor(Path(parent or tempfile.gettempdir()), self._as_user)
            if blocked is not None:
                raise PostgresFailed(
                    f"PostgreSQL runs as the {self._as_user.pw_name!r} user here (it refuses root), and that user "
                    f"cannot enter {blocked}: make the server's directory somewhere it can reach (e.g. under /tmp)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="postgresql-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_ports()[0]
        self.durable = durable
        if self._as_user is not None:
            os.chown(self.root, self._as_user.pw_uid, self._as_user.pw_gid)

    def url_for(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server; remove its directory unless ``remove`` is False (to keep its data and log)."""
        try:
            self.halt()
        finally:
            if remove:
                shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server at once, as a crash would (its data stays: ``resume`` starts it again)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again, after ``halt``), on the same port with the same data."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w", "start")

    def _options(self) -> str:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections={MAX_CONNECTIONS}"
        return options if self.durable else f"{options} -c fsync=off -c full_page_writes=off"

    def _run(self, *command: str) -> None:
        try:
            result = subprocess.run(
                command,
                user=self._as_user.pw_uid if self._as_user else None,
                group=self._as_user.pw_gid if self._as_user else None,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise PostgresFailed(
                f"{command[0]} is not on PATH: install PostgreSQL (the OS package postgresql, whose initdb and pg_ctl "
                "may need adding to PATH)"
            ) from None
        except subprocess.TimeoutExpired:
            raise PostgresFailed(
                f"{' '.join(command)} took more than {COMMAND_TIMEOUT:g} s{self._log_tail()}"
            ) from None
        if result.returncode != 0:
            raise PostgresFailed(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        return "\n" + self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _run_as() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresFailed(
            f"running as root, PostgreSQL must run as the {SUPERUSER!r} user, and there is none: install the "
            f"postgresql package (which creates it), or `useradd --system {SUPERUSER}`"
        ) from None


def unreachable_ancestor(directory: Path, user: pwd.struct_passwd) -> Path | None:
    """The first of ``directory`` and its parents that ``user`` may not enter (no search permission), else None."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    resolved = directory.resolve()
    for path in (resolved, *resolved.parents):
        info = path.stat()
        if info.st_uid == user.pw_uid:
            search = stat.S_IXUSR
        elif info.st_gid in groups:
            search = stat.S_IXGRP
        else:
            search = stat.S_IXOTH
        if not info.st_mode & search:
            return path
    return None

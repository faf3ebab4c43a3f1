"""Starting the processes of a cluster and waiting until each accepts connections, then stopping them all.

Every dfsd daemon (and every baseline server of dfs-bench) prints exactly one line on standard output once it listens,
``... listening on HOST:PORT``, so whoever starts one — ``dfsd cluster``, dfs-bench, the test suite — waits for that
line instead of sleeping for a guessed time, and learns the address (a port 0 picked a free one) from it.
"""

from __future__ import annotations

import contextlib
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# How long a process may take to print its ready line: far beyond any healthy start, even on a busy machine.
READY_TIMEOUT = 20.0

READY_MARK = " listening on "

# Where the kernel says which local ports it gives outgoing connections (and bind to port 0).
LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The lowest port ``free_ports`` offers: above the well-known and most registered services' ports.
LOWEST_FREE_PORT = 10000
# How many ports in use ``free_ports`` steps past at random before it lets the kernel pick one.
FREE_PORT_TRIES = 100


class NotReady(Exception):
    """A process exited, or stayed silent past the timeout, before saying it listens; the message holds its log's
    tail (when it has a log)."""


def dfsd_command(*args: str) -> list[str]:
    """The command line of ``dfsd ARGS`` run by this Python, whether or not the ``dfsd`` script is on the PATH."""
    return [sys.executable, "-m", "dfsd", *args]


def start(
    command: Sequence[str],
    *,
    cwd: Path,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
    timeout: float = READY_TIMEOUT,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``command`` and wait for its ready line; return the process and the address it listens on.

    Its standard error is appended to ``log`` (None: this process's own standard error), ``env`` is its whole
    environment (None: this one's), and ``new_session`` keeps a Ctrl-C at the terminal from reaching it (the starter
    then stops it, once). Raises ``NotReady``, with the process killed and reaped, if no ready line comes."""
    with open(log, "ab") if log is not None else contextlib.nullcontext() as stderr:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
            start_new_session=new_session,
        )
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode(errors="replace").strip() if readable else ""
    if READY_MARK not in line:
        if readable and not line:  # its standard output ended: it is exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        status = process.poll()
        process.kill()
        process.wait()
        process.stdout.close()
        if status is not None:
            why = f"exited with status {status}"
        else:
            why = f"printed {line!r}" if line else f"said nothing for {timeout:g} s"
        tail = (log.read_text(errors="replace")[-3000:].strip() or "(its log is empty)") if log is not None else ""
        raise NotReady(f"`{' '.join(command)}` {why} instead of saying it listens\n{tail}".rstrip())
    return process, line.rpartition(" ")[2]


def stop(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process still running, in the order given, then SIGKILL whatever still runs after ``grace``
    seconds — or at once on Ctrl-C."""
    deadline = time.monotonic() + grace
    try:  # a second Ctrl-C may come at any point in here, even while the first SIGTERMs go out
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        for process in processes:
            process.kill()
            process.wait()
    finally:
        for process in processes:
            if process.stdout is not None:
                process.stdout.close()


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, for processes started later to listen on.

    They come from outside the kernel's range for outgoing connections (``LOCAL_PORT_RANGE``), at random: a port from
    binding port 0 lies inside it, and any connection made before the process binds it (a manager dialing its
    database, a node dialing its manager) could take it as its local port, so that the process then fails to start
    ("Address already in use"). Another listener could still take one meanwhile, which the random pick among
    thousands makes unlikely. Where the range cannot be read, or FREE_PORT_TRIES picks in a row are all in use, the
    kernel picks (port 0)."""
    candidates = _listening_ports()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        tries = 0
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            tries += 1
            try:
                sock.bind(("127.0.0.1", random.choice(candidates) if candidates and tries <= FREE_PORT_TRIES else 0))
            except OSError:  # in use: try another
                continue
            ports.append(int(sock.getsockname()[1]))
            tries = 0
        return ports


def _listening_ports() -> range:
    """The larger of the two stretches of ports outside the kernel's range for outgoing connections."""
    try:
        low, high = (int(part) for part in LOCAL_PORT_RANGE.read_text().split())
    except (OSError, ValueError):
        return range(0)
    below, above = range(LOWEST_FREE_PORT, low), range(high + 1, 65536)
    return below if len(below) >= len(above) else above

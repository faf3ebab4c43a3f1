"""Real dfsd processes on 127.0.0.1 for the integration tests: a manager, storage nodes and the client tools.

Every process is started as ``python -m dfsd ...`` from a temporary directory, on a free port (port 0), and waited for
through the one line it prints when it is listening; nothing sleeps for a guessed time. ``LocalCluster.stop`` kills
whatever is still running, so no test leaves a process behind.
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dfsd import aio
from dfsd.client import Client

# Short liveness settings so tests see a frozen or killed node go down quickly.
HEARTBEAT = "0.2"
NODE_TIMEOUT = "1.0"
READY_TIMEOUT = 20.0


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


def start_daemon(args: list[str], cwd: Path, log: Path) -> Daemon:
    """Start ``dfsd ARGS`` and wait for its ready line; fail with its log if it dies first."""
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dfsd", *args, "--log-level", "info"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line:
        process.kill()
        process.wait()
        raise AssertionError(f"dfsd {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
    return Daemon(process, line.rpartition(" ")[2], log)


@dataclass
class LocalCluster:
    root: Path
    manager: Daemon | None = None
    nodes: dict[int, Daemon] = field(default_factory=dict)
    manager_port: int = 0

    @property
    def address(self) -> str:
        assert self.manager is not None
        return self.manager.address

    def start_manager(self) -> Daemon:
        self.manager = start_daemon(
            [
                "manager",
                "--port",
                str(self.manager_port),
                "--db",
                str(self.root / "manager.db"),
                "--node-timeout",
                NODE_TIMEOUT,
            ],
            self.root,
            self.root / "manager.log",
        )
        self.manager_port = int(self.manager.address.rpartition(":")[2])
        return self.manager

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def start_node(self, node_id: int, wait: bool = True) -> Daemon:
        self.nodes[node_id] = start_daemon(
            [
                "storage",
                "--id",
                str(node_id),
                "--manager",
                self.address,
                "--data",
                str(self.data_dir(node_id)),
                "--heartbeat",
                HEARTBEAT,
            ],
            self.root,
            self.root / f"node-{node_id}.log",
        )
        if wait:
            self.wait_for(lambda status: any(n.id == node_id and n.up for n in status.nodes), f"node {node_id} up")
        return self.nodes[node_id]

    def wait_for(self, condition, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        """Poll ``dfsd status`` until ``condition(status)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            # In a thread of its own, so that async tests (already inside an event loop) can call this too.
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                status = thread.submit(aio.run, _status(self.address)).result()
            if condition(status):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {status}")
            time.sleep(0.05)

    def wait_node_down(self, node_id: int) -> None:
        self.wait_for(lambda status: any(n.id == node_id and not n.up for n in status.nodes), f"node {node_id} down")

    def stop(self) -> None:
        for daemon in [*self.nodes.values(), *([self.manager] if self.manager else [])]:
            daemon.kill()

    def stored_files(self, node_id: int) -> list[Path]:
        """The complete files on a node's disk."""
        return [p for p in self.data_dir(node_id).rglob("*") if p.is_file() and not p.name.endswith(".part")]

    def all_entries(self) -> list[Path]:
        return [p for node_id in self.nodes for p in self.data_dir(node_id).rglob("*")]


async def _status(address: str):  # type: ignore[no-untyped-def]
    async with Client(address) as client:
        return await client.status()


def run_tool(tool: str, *args: str, manager: str, stdin: bytes | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    """Run an installed tool (dfs-push, dfs-cat, dfsd, ...) as its own process, with $DFS_MANAGER pointing at
    ``manager``; returns the CompletedProcess."""
    command = Path(sys.executable).parent / tool
    env = {**os.environ, "DFS_MANAGER": manager}
    return subprocess.run(
        [str(command), *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=300, check=False
    )

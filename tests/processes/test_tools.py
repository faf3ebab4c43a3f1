"""The bundled tools as a user runs them: real processes, exit statuses, messages naming their error number."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import LocalCluster, free_port, run_tool

from dfsd import processes


def test_push_cat_ls_rm(cluster: LocalCluster, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"first line\nsecond line\n")
    assert run_tool("dfs-push", str(source), manager=cluster.address).returncode == 0
    pushed = run_tool("dfs-push", "-", "--name", "from stdin", manager=cluster.address, stdin=b"piped bytes")
    assert pushed.returncode == 0, pushed.stderr

    cat = run_tool("dfs-cat", "notes.txt", manager=cluster.address)
    assert (cat.returncode, cat.stdout) == (0, source.read_bytes())
    assert run_tool("dfs-cat", "from stdin", "-o", str(tmp_path / "out"), manager=cluster.address).returncode == 0
    assert (tmp_path / "out").read_bytes() == b"piped bytes"
    ranged = run_tool("dfs-cat", "notes.txt", "--offset", "6", "--length", "4", manager=cluster.address)
    assert ranged.stdout == b"line"

    listing = run_tool("dfs-ls", manager=cluster.address)
    assert listing.stdout.decode().splitlines() == ["from stdin", "notes.txt"]
    long_listing = run_tool("dfs-ls", "-l", "notes", manager=cluster.address).stdout.decode()
    assert "notes.txt" in long_listing and " 23 " in long_listing.replace("  ", " ")

    status = run_tool("dfsd", "status", manager=cluster.address)
    assert status.returncode == 0
    assert "total: 3 of 3 nodes up, 2 files" in status.stdout.decode()

    assert run_tool("dfs-rm", "notes.txt", "from stdin", manager=cluster.address).returncode == 0
    assert run_tool("dfs-ls", manager=cluster.address).stdout == b""


def expect_error(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    message = result.stderr.decode()
    assert result.returncode == code, message
    assert f"error {code}:" in message
    return message


def test_error_1_when_no_storage_node_is_up(bare_cluster: LocalCluster) -> None:
    message = expect_error(run_tool("dfs-push", "-", "--name", "x", manager=bare_cluster.address, stdin=b"x"), 1)
    assert "dfsd storage" in message  # says how to start one


def test_error_1_when_the_manager_is_unreachable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = expect_error(run_tool("dfs-ls", manager=f"127.0.0.1:{port}"), 1)
    assert "dfsd manager" in message


def test_error_2_for_unknown_names(cluster: LocalCluster) -> None:
    expect_error(run_tool("dfs-cat", "nope", manager=cluster.address), 2)
    expect_error(run_tool("dfs-rm", "nope", manager=cluster.address), 2)


def test_error_3_for_a_name_in_use(cluster: LocalCluster) -> None:
    assert run_tool("dfs-push", "-", "--name", "taken", manager=cluster.address, stdin=b"one").returncode == 0
    expect_error(run_tool("dfs-push", "-", "--name", "taken", manager=cluster.address, stdin=b"two"), 3)
    assert run_tool("dfs-cat", "taken", manager=cluster.address).stdout == b"one"


def test_error_4_when_the_files_node_is_down(cluster: LocalCluster) -> None:
    assert run_tool("dfs-push", "-", "--name", "stranded", manager=cluster.address, stdin=b"data").returncode == 0
    node_id = int(run_tool("dfs-ls", "-l", manager=cluster.address).stdout.split(b"node")[1].split()[0])
    cluster.nodes[node_id].terminate()
    cluster.wait_node_down(node_id)
    expect_error(run_tool("dfs-cat", "stranded", manager=cluster.address), 4)
    assert "DOWN" in run_tool("dfsd", "status", manager=cluster.address).stdout.decode()
    # uploads go on to the nodes still up
    assert run_tool("dfs-push", "-", "--name", "later", manager=cluster.address, stdin=b"more").returncode == 0
    cluster.start_node(node_id)
    assert run_tool("dfs-cat", "stranded", manager=cluster.address).stdout == b"data"


def test_error_5_for_bad_names_and_64_for_bad_usage(cluster: LocalCluster) -> None:
    expect_error(run_tool("dfs-push", "-", "--name", "x" * 2000, manager=cluster.address, stdin=b"x"), 5)
    assert run_tool("dfs-push", "-", manager=cluster.address, stdin=b"x").returncode == 64
    assert run_tool("dfs-cat", manager=cluster.address).returncode == 64
    assert run_tool("dfs-push", "/no/such/file", manager=cluster.address).returncode == 66


def test_large_file_streams_through_with_flat_memory(cluster: LocalCluster, tmp_path: Path) -> None:
    """256 MiB through dfs-push and dfs-cat: byte-exact, and no process holds anything like the whole file."""
    size = 256 * 1024 * 1024
    source = tmp_path / "big.bin"
    hasher = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(source, "wb") as file:
        for index in range(size // len(block)):
            chunk = bytes([index % 256]) + block[1:]
            hasher.update(chunk)
            file.write(chunk)
    pushed = run_tool("dfs-push", str(source), manager=cluster.address)
    assert pushed.returncode == 0, pushed.stderr
    source.unlink()
    target = tmp_path / "copy.bin"
    fetched = run_tool("dfs-cat", "big.bin", "-o", str(target), manager=cluster.address)
    assert fetched.returncode == 0, fetched.stderr
    assert target.stat().st_size == size
    with open(target, "rb") as file:
        assert hashlib.file_digest(file, "sha256").digest() == hasher.digest()
    limit = 128 * 1024 * 1024  # half the file; in practice each process stays far lower
    for daemon in [cluster.manager, *cluster.nodes.values()]:
        assert daemon is not None
        assert daemon.peak_rss() < limit, (daemon.log, daemon.peak_rss())


def test_cat_refuses_to_leave_a_partial_output_file(cluster: LocalCluster, tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.mkdir()
    expect_error(run_tool("dfs-cat", "missing", "-o", str(output / "file"), manager=cluster.address), 2)
    assert list(output.iterdir()) == []


def test_cat_output_to_a_named_pipe_writes_into_it_repro(cluster: LocalCluster, tmp_path: Path) -> None:
    """dfs-cat -o wrote into a temporary file and renamed it over the target even when the target was a device or a
    named pipe: run as root, `dfs-cat NAME -o /dev/null` replaced /dev/null with a regular file. A named pipe stands
    in for the device here: it must still be one afterwards, and its reader must have had every byte."""
    payload = os.urandom(3 * 1024 * 1024 + 7)
    source = tmp_path / "source"
    source.write_bytes(payload)
    assert run_tool("dfs-push", str(source), "--name", "piped", manager=cluster.address).returncode == 0
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    fetched = run_tool("dfs-cat", "piped", "-o", str(pipe), manager=cluster.address)
    assert fetched.returncode == 0, fetched.stderr
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    reader.join(timeout=30)
    assert received == [payload]


def test_cat_of_bytes_rotten_on_disk_exits_7_and_leaves_no_output_file(cluster: LocalCluster, tmp_path: Path) -> None:
    """dfs-cat checks the SHA-256 of what it receives (on its event loop, while a thread writes the file): one bit
    flipped on the node's disk fails -o with error 7 and leaves nothing behind, over several of the thread's batches
    and a last partial block."""
    source = tmp_path / "source"
    source.write_bytes(os.urandom(9 * 1024 * 1024 + 5))
    assert run_tool("dfs-push", str(source), "--name", "rotten", manager=cluster.address).returncode == 0
    (stored,) = [path for node_id in cluster.nodes for path in cluster.stored_files(node_id)]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    output = tmp_path / "output"
    output.mkdir()
    message = expect_error(run_tool("dfs-cat", "rotten", "-o", str(output / "copy"), manager=cluster.address), 7)
    assert "do not trust the copy" in message
    assert list(output.iterdir()) == []


def test_cluster_command_starts_and_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dfsd", "cluster", "--nodes", "2", "--port", str(port), "--data", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()
        assert f"manager on 127.0.0.1:{port}, 2 storage nodes up" in banner
        manager = f"127.0.0.1:{port}"
        assert run_tool("dfs-push", "-", "--name", "hi", manager=manager, stdin=b"hello").returncode == 0
        assert run_tool("dfs-cat", "hi", manager=manager).stdout == b"hello"
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    time.sleep(0.2)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "d")], capture_output=True, check=False).stdout
    assert leftovers == b""


class _InterruptedAsSignalled(subprocess.Popen[bytes]):
    """A real process whose SIGTERM is followed at once by a Ctrl-C: the second one of a user in a hurry."""

    def send_signal(self, sig: int) -> None:
        super().send_signal(sig)
        if sig == signal.SIGTERM:
            raise KeyboardInterrupt


def test_cluster_interrupted_twice_left_processes_and_a_traceback_repro() -> None:
    """`dfsd cluster`: a second Ctrl-C landing while the first one's SIGTERMs went out raised KeyboardInterrupt out of
    processes.stop (a traceback), and the daemons not yet signalled were left running. Now it kills them all at once."""
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ]
    children = [_InterruptedAsSignalled(stubborn), subprocess.Popen(stubborn), subprocess.Popen(stubborn)]
    try:
        started = time.monotonic()
        try:
            processes.stop(children, grace=30.0)
        except KeyboardInterrupt:  # as it escaped before: fail this test rather than end the whole run
            pytest.fail("the second Ctrl-C escaped processes.stop")
        assert time.monotonic() - started < 10  # killed at once, not after the grace
        assert all(child.poll() is not None for child in children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

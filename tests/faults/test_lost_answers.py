"""An upload whose answer is lost, and a manager that restarts: what a client sees (issue 10, items 4 and 5).

A put naming the size and SHA-256 of the bytes its name already holds is answered ``stored`` (``already``), so a client
that lost the answer to an upload can always ask again; the tools do so once by themselves. A manager that restarts
gives its known nodes a few seconds to reconnect before it answers that none is up.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dfsd.protocol import NameExists, encode
from dfsd.protocol.messages import End
from faultproxy import FaultProxy
from harness import LocalCluster, run_tool

from dfsd.client import Client

SMALL = b"a small file, sent inline"
LARGE = os.urandom(3 * 1024 * 1024 + 7)  # streamed: over INLINE_MAX, several chunks


async def test_put_of_the_same_bytes_again_is_already_stored(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for name, payload in (("small", SMALL), ("large", LARGE)):
            first = await client.put(name, payload)
            assert not first.already
            sha256 = hashlib.sha256(payload).digest()
            again = await client.put(name, payload, sha256=sha256)  # size and SHA-256 named in the put
            assert (again.size, again.sha256, again.already) == (len(payload), sha256, True)
            with pytest.raises(NameExists):
                await client.put(name, payload[:-1] + b"!", sha256=hashlib.sha256(payload[:-1] + b"!").digest())
            with pytest.raises(NameExists):  # no checksum named: the name is simply taken
                await client.put(name, _chunks(payload))
            assert await client.read(name) == payload


async def _chunks(payload: bytes):  # type: ignore[no-untyped-def]
    yield payload


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_push_whose_answer_was_lost_is_retried_once_repro(cluster: LocalCluster, tmp_path: Path, source: str) -> None:
    """The manager commits an upload but its answer never reaches dfs-push (the link fails right after the last byte):
    dfs-push says so, asks again with the checksum, and succeeds; the file is stored once, byte for byte."""
    path = tmp_path / "large"
    path.write_bytes(LARGE)
    end = encode(End(hashlib.sha256(LARGE).digest()))
    with FaultProxy(cluster.address) as link:
        link.cut_after(end)
        if source == "file":
            pushed = run_tool("dfs-push", str(path), "--name", "retried", manager=link.address)
        else:
            pushed = run_tool("dfs-push", "-", "--name", "retried", manager=link.address, stdin=LARGE)
    stderr = pushed.stderr.decode()
    assert pushed.returncode == 0, stderr
    assert "lost the connection to the manager" in stderr and "asking again with its checksum" in stderr
    assert "had been stored already" in stderr
    cat = run_tool("dfs-cat", "retried", manager=cluster.address)
    assert cat.returncode == 0 and cat.stdout == LARGE
    listing = run_tool("dfs-ls", manager=cluster.address)
    assert listing.stdout.decode().split() == ["retried"]


def test_push_cut_off_from_a_pipe_says_nothing_was_stored(cluster: LocalCluster) -> None:
    """A pipe cut off before its last byte cannot be sent again, and cannot have been stored: exit 1, saying so."""
    with FaultProxy(cluster.address) as link:
        link.cut_after(LARGE[: 1024 * 1024])  # the link fails a little into the first chunk
        pushed = run_tool("dfs-push", "-", "--name", "cut", manager=link.address, stdin=LARGE)
    assert pushed.returncode == 1
    assert "not stored" in pushed.stderr.decode()
    assert run_tool("dfs-ls", manager=cluster.address).stdout == b""


async def test_upload_right_after_a_manager_restart_succeeds_repro(cluster: LocalCluster) -> None:
    """kill -9 the manager, start it again on the same port and database, and upload at once: the manager waits for
    its nodes to reconnect instead of answering "no storage node is up"."""
    async with Client(cluster.address) as client:
        await client.put("before", b"stored before the restart")
    assert cluster.manager is not None
    cluster.manager.kill()
    cluster.start_manager()
    async with Client(cluster.address) as client:
        await client.put("after", LARGE)
        assert await client.read("before") == b"stored before the restart"
    cluster.manager.kill()
    cluster.start_manager()
    pushed = run_tool("dfs-push", "-", "--name", "pushed", manager=cluster.address, stdin=b"x")
    assert pushed.returncode == 0, pushed.stderr


def test_push_of_a_file_cut_off_midway_is_sent_again(cluster: LocalCluster, tmp_path: Path) -> None:
    """A file (unlike a pipe) can be read again: cut off a little into its upload, it is hashed and sent once more."""
    path = tmp_path / "large"
    path.write_bytes(LARGE)
    with FaultProxy(cluster.address) as link:
        link.cut_after(LARGE[: 1024 * 1024])
        pushed = run_tool("dfs-push", str(path), "--name", "again", manager=link.address)
    stderr = pushed.stderr.decode()
    assert pushed.returncode == 0, stderr
    assert "asking again with its checksum" in stderr and "had been stored already" not in stderr
    cat = run_tool("dfs-cat", "again", manager=cluster.address)
    assert cat.returncode == 0 and cat.stdout == LARGE

"""Nodes joining, leaving, flapping and partitioned; rebalancing and reconciliation — with real processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from dfsd.protocol import FileUnavailable, ServersUnavailable
from faultproxy import FaultProxy
from harness import LocalCluster, free_port, stalled

from dfsd.client import Client


async def upload_all(cluster: LocalCluster, files: dict[str, bytes], workers: int = 8) -> None:
    names = list(files)

    async def upload(worker: int) -> None:
        async with Client(cluster.address) as client:
            for name in names[worker::workers]:
                await client.put(name, files[name])

    await asyncio.gather(*(upload(worker) for worker in range(workers)))


async def check_all(cluster: LocalCluster, files: dict[str, bytes]) -> None:
    async with Client(cluster.address) as client:
        for name, payload in files.items():
            assert await client.read(name) == payload, name


async def test_a_joining_node_gets_its_share_while_every_file_stays_readable(cluster: LocalCluster) -> None:
    files = {f"join/{index:03d}": os.urandom(1000 + index) for index in range(300)}
    await upload_all(cluster, files)
    errors: list[BaseException] = []
    reads = 0
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        async with Client(cluster.address) as client:
            names = list(files)
            while not stop.is_set():
                name = names[reads % len(names)]
                try:
                    assert await client.read(name) == files[name]
                except BaseException as err:
                    errors.append(err)
                reads += 1

    readers = [asyncio.ensure_future(reader()) for _ in range(2)]
    started = time.monotonic()
    await asyncio.to_thread(cluster.start_node, 103)
    await asyncio.to_thread(cluster.wait_balanced)
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*readers)
    assert errors == []
    async with Client(cluster.address) as client:
        status = await client.status()
    assert {node.id: node.files for node in status.nodes} == {100: 75, 101: 75, 102: 75, 103: 75}
    assert status.rebalance is not None and status.rebalance.moved == 75
    await check_all(cluster, files)
    cluster.wait_no_orphans()
    print(f"\n300-file rebalance onto a new node: {elapsed:.2f} s, {reads} concurrent reads, no errors")


async def test_delete_while_a_node_is_down_is_finished_when_it_returns(cluster: LocalCluster) -> None:
    files = {f"gone/{index}": os.urandom(100) for index in range(30)}
    await upload_all(cluster, files)
    cluster.nodes[101].kill()
    cluster.wait_node_down(101)
    async with Client(cluster.address) as client:
        doomed = [info.name async for info in client.list() if info.node == 101]
        for name in doomed:
            await client.delete(name)
    assert len(cluster.ids_on_disk(101)) == len(doomed) == 10
    cluster.start_node(101)
    cluster.wait_no_orphans()  # the orphans were removed from its disk
    for name in doomed:
        del files[name]
    await check_all(cluster, files)
    status = await Client(cluster.address).status()
    assert [node.orphans for node in status.nodes if node.id == 101] == [10]


async def test_files_missing_from_a_returning_node_are_reported_lost(cluster: LocalCluster) -> None:
    await upload_all(cluster, {f"lose/{index}": b"precious" for index in range(9)})
    victim = sorted(cluster.stored_files(102))[0]
    cluster.nodes[102].kill()
    cluster.wait_node_down(102)
    victim.unlink()  # a disk that lost a file while its node was down
    cluster.start_node(102)
    async with Client(cluster.address) as client:
        status = await client.status()
        assert status.lost is not None and len(status.lost) == 1
        lost_name = status.lost[0]
        assert [node.lost for node in status.nodes if node.id == 102] == [1]
        with pytest.raises(FileUnavailable, match="lost"):
            await client.read(lost_name)
        info = await client.stat(lost_name)
        assert info.node == 102
    from harness import run_tool

    assert "LOST FILES" in run_tool("dfsd", "status", manager=cluster.address).stdout.decode()


def test_manual_rebalance(bare_cluster: LocalCluster) -> None:
    cluster = bare_cluster
    assert cluster.manager is not None
    cluster.manager.kill()
    cluster.start_manager("--no-auto-rebalance")
    cluster.start_node(100)
    asyncio.run(upload_all(cluster, {f"manual/{index}": b"m" for index in range(20)}, workers=2))
    cluster.start_node(101)
    time.sleep(0.5)
    counts = {}
    cluster.wait_for(lambda s: counts.update({n.id: n.files for n in s.nodes}) or True, "status")
    assert counts == {100: 20, 101: 0}  # nothing moves by itself
    from harness import run_tool

    result = run_tool("dfsd", "rebalance", manager=cluster.address)
    assert result.returncode == 0, result.stderr
    assert "100: 10, 101: 10" in result.stdout.decode().splitlines()[-1]
    cluster.wait_no_orphans()


async def put_once_placed_on_a_live_node(client: Client, name: str, payload: bytes) -> None:
    """Put again after an upload failed with its node: until the manager sees that node down (on a busy machine, a
    moment after the kill), it may place the retry there too, which fails the same way and keeps nothing."""
    async with asyncio.timeout(30):
        while True:
            try:
                await client.put(name, payload)
                return
            except ServersUnavailable:
                await asyncio.sleep(0.05)


async def test_flapping_node_while_uploads_run(cluster: LocalCluster) -> None:
    acknowledged: dict[str, bytes] = {}
    failures = 0
    stop = asyncio.Event()

    async def uploader(worker: int) -> None:
        nonlocal failures
        async with Client(cluster.address) as client:
            index = 0
            while not stop.is_set() and index < 400:
                name, payload = f"flap/{worker}/{index}", os.urandom(20_000)
                try:
                    await client.put(name, payload)
                    acknowledged[name] = payload
                except ServersUnavailable:
                    failures += 1  # its node went away mid-upload: nothing was kept, the name is free
                    await put_once_placed_on_a_live_node(client, name, payload)
                    acknowledged[name] = payload
                index += 1

    uploads = [asyncio.ensure_future(uploader(worker)) for worker in range(4)]
    for _ in range(4):
        await asyncio.sleep(0.3)
        cluster.nodes[102].kill()
        await asyncio.to_thread(cluster.wait_node_down, 102)
        await asyncio.sleep(0.2)
        await asyncio.to_thread(cluster.start_node, 102)
    stop.set()
    await asyncio.gather(*uploads)
    assert len(acknowledged) > 50
    await check_all(cluster, acknowledged)
    await asyncio.to_thread(cluster.wait_balanced)
    await asyncio.to_thread(cluster.wait_no_orphans)
    await check_all(cluster, acknowledged)


async def test_partitioned_node_goes_down_and_rejoins_by_itself(cluster: LocalCluster) -> None:
    """Node 104 reaches the manager, and is reached, only through proxies that the test black-holes and heals."""
    await upload_all(cluster, {f"near/{index}": b"near" for index in range(3)})  # one file on each of 100-102
    port = free_port()
    with FaultProxy(cluster.address) as control, FaultProxy(f"127.0.0.1:{port}") as node_data:
        await asyncio.to_thread(
            cluster.start_node, 104, True, control.address, "--port", str(port), "--advertise", node_data.address
        )
        payload = os.urandom(48 * 1024 * 1024)
        async with Client(cluster.address) as client:
            await client.put("far", payload)  # node 104 had no files: it gets this one
            assert (await client.stat("far")).node == 104
            download = await client.get("far")
            chunks = aiter(download)
            await anext(chunks)
            control.blackhole()
            node_data.blackhole()
            await asyncio.to_thread(cluster.wait_node_down, 104)
            with pytest.raises(FileUnavailable):  # the transfer in flight fails cleanly
                async with asyncio.timeout(20):
                    async for _chunk in chunks:
                        pass
            with pytest.raises(FileUnavailable):
                await client.read("far")
            control.heal()
            node_data.heal()
            await asyncio.to_thread(cluster.wait_for, lambda s: all(n.up for n in s.nodes), "104 back", 30)
            assert await client.read("far") == payload


@pytest.mark.parametrize("victim", ["manager", "source", "target"])
async def test_kill_9_during_a_move_loses_nothing(cluster: LocalCluster, victim: str) -> None:
    files = {f"move/{index:02d}": os.urandom(300_000) for index in range(60)}
    await upload_all(cluster, files)
    port = free_port()
    target_args = ("--port", str(port))
    with FaultProxy(f"127.0.0.1:{port}") as slow_link:
        slow_link.delay = 0.03  # moves onto node 103 crawl, so the kill lands in the middle of them
        target_args += ("--advertise", slow_link.address)
        await asyncio.to_thread(cluster.start_node, 103, True, None, *target_args)
        await asyncio.to_thread(
            cluster.wait_for, lambda s: s.rebalance.running and s.rebalance.moved >= 2, "moves under way"
        )
        if victim == "manager":
            assert cluster.manager is not None
            cluster.manager.kill()
            await asyncio.to_thread(cluster.start_manager)
        elif victim == "source":
            cluster.nodes[101].kill()
            await asyncio.to_thread(cluster.start_node, 101)
        else:
            cluster.nodes[103].kill()
            await asyncio.to_thread(cluster.start_node, 103, True, None, *target_args)
        slow_link.delay = 0
        await asyncio.to_thread(cluster.wait_balanced)
        await check_all(cluster, files)
        await asyncio.to_thread(cluster.wait_no_orphans)


async def test_manager_killed_during_an_upload_leaves_nothing(cluster: LocalCluster) -> None:
    stop = asyncio.Event()
    async with Client(cluster.address) as client:
        await client.put("before", b"acknowledged")
        upload = asyncio.ensure_future(client.put("during", stalled(os.urandom(2_000_000), stop)))
        await cluster.until_partial()
        assert cluster.manager is not None
        cluster.manager.kill()
        with pytest.raises(ServersUnavailable):
            await asyncio.wait_for(upload, 10)
        stop.set()
    await asyncio.to_thread(cluster.start_manager)
    await asyncio.to_thread(cluster.wait_for, lambda s: all(n.up for n in s.nodes), "nodes back")
    await asyncio.to_thread(cluster.wait_no_orphans)
    async with Client(cluster.address) as client:
        assert [info.name async for info in client.list()] == ["before"]
        assert await client.read("before") == b"acknowledged"
        await client.put("during", b"second try")


async def test_links_cut_mid_stream_fail_cleanly(cluster: LocalCluster) -> None:
    """The data link to a node is cut in the middle of an upload and of a download: each answers its error, nothing
    half-written stays, and the next request through the healed link works."""
    await upload_all(cluster, {f"pad/{index}": b"pad" for index in range(3)})  # so new files go to node 104
    port = free_port()
    with FaultProxy(f"127.0.0.1:{port}") as link:
        await asyncio.to_thread(cluster.start_node, 104, True, None, "--port", str(port), "--advertise", link.address)
        link.delay = 0.02
        payload = os.urandom(16 * 1024 * 1024)
        async with Client(cluster.address) as client:
            upload = asyncio.ensure_future(client.put("cut-up", payload))
            await cluster.until_partial(104)
            link.cut()
            with pytest.raises(ServersUnavailable):
                await upload
            link.delay = 0
            await client.put("cut-down", payload)
            assert (await client.stat("cut-down")).node == 104
            link.delay = 0.02
            download = await client.get("cut-down")
            chunks = aiter(download)
            await anext(chunks)
            link.cut()
            with pytest.raises(FileUnavailable):
                async for _chunk in chunks:
                    pass
            link.delay = 0
            assert await client.read("cut-down") == payload
            assert [info.name async for info in client.list("cut-")] == ["cut-down"]
        await asyncio.to_thread(cluster.wait_no_orphans)


async def test_small_file_killed_between_write_and_commit_leaves_an_orphan_that_registration_removes(
    bare_cluster: LocalCluster,
) -> None:
    """A small file is written at its final path, not under a partial name: the node creates and writes it, its
    answer is lost on the link (the manager never hears it), and the manager and the node are killed (kill -9) before
    any commit. The name never appears, and the file left on the node's disk, whole or cut short, is an orphan that
    the node's next registration with the restarted manager removes."""
    cluster = bare_cluster
    port = free_port()
    with FaultProxy(f"127.0.0.1:{port}") as link:
        await asyncio.to_thread(cluster.start_node, 100, True, None, "--port", str(port), "--advertise", link.address)
        async with Client(cluster.address) as client:
            await client.put("committed", b"acknowledged")  # the manager's data connection, through the link
            link.answers_lost = True
            upload = asyncio.ensure_future(client.put("uncommitted", b"written, never recorded"))
            async with asyncio.timeout(15):
                while not (written := cluster.ids_on_disk(100) - cluster.records().get(100, set())):
                    await asyncio.sleep(0.01)
            assert cluster.manager is not None
            cluster.manager.kill()
            cluster.nodes[100].kill()
            with pytest.raises(ServersUnavailable):
                await upload
    await asyncio.to_thread(cluster.start_manager)
    await asyncio.to_thread(cluster.start_node, 100)
    await asyncio.to_thread(cluster.wait_no_orphans)
    assert not written & cluster.ids_on_disk(100)
    async with Client(cluster.address) as client:
        assert [info.name async for info in client.list()] == ["committed"]
        assert await client.read("committed") == b"acknowledged"


async def test_draining_a_node_retires_it_without_losing_a_file(cluster: LocalCluster) -> None:
    files = {f"drain/{index}": os.urandom(2000) for index in range(60)}
    await upload_all(cluster, files)
    from harness import run_tool

    result = await asyncio.to_thread(run_tool, "dfsd", "drain", "101", manager=cluster.address)
    assert result.returncode == 0, result.stderr
    assert "node 101 is empty" in result.stdout.decode()
    async with Client(cluster.address) as client:
        await client.put("after-drain", b"new files avoid a draining node")
        assert (await client.stat("after-drain")).node != 101
    await check_all(cluster, files)
    assert cluster.stored_files(101) == []
    refused = await asyncio.to_thread(run_tool, "dfsd", "drain", "101", "--forget", manager=cluster.address)
    assert refused.returncode == 5  # still running: it cannot be forgotten yet
    cluster.nodes[101].terminate()
    await asyncio.to_thread(cluster.wait_node_down, 101)
    status = await Client(cluster.address).status()
    assert [(n.id, n.draining) for n in status.nodes if n.id == 101] == [(101, True)]  # stays retired while stopped
    forgotten = await asyncio.to_thread(run_tool, "dfsd", "drain", "101", "--forget", manager=cluster.address)
    assert forgotten.returncode == 0, forgotten.stderr
    await asyncio.to_thread(cluster.wait_for, lambda s: [n.id for n in s.nodes] == [100, 102], "101 forgotten")
    del cluster.nodes[101]
    await check_all(cluster, files)
    await asyncio.to_thread(cluster.wait_no_orphans)

"""Entries in a node's data directory that dfsd did not make (issue 10, item 7): reported, never served or deleted."""

from __future__ import annotations

import json

from harness import LocalCluster, run_tool

from dfsd.client import Client


async def test_stray_files_in_a_data_directory_are_reported_and_left_alone_repro(cluster: LocalCluster) -> None:
    async with Client(cluster.address) as client:
        for index in range(6):
            await client.put(f"file-{index}", b"bytes %d" % index)
    data = cluster.data_dir(100)
    strays = [data / "copied-in.iso", data / "g0" / "holiday.jpg", data / "g0" / "9.99999.old"]
    for stray in strays:
        stray.write_bytes(b"not dfsd's")
    cluster.nodes[100].kill()
    cluster.wait_node_down(100)
    cluster.start_node(100)

    status = run_tool("dfsd", "status", manager=cluster.address)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.decode().splitlines()
    column_end = lines[0].index("FOREIGN") + len("FOREIGN")  # a right-aligned column
    row = next(line for line in lines[1:] if line.split()[0] == "100")
    assert row[:column_end].split()[-1] == "3"
    as_json = json.loads(run_tool("dfsd", "status", "--json", manager=cluster.address).stdout)
    assert {node["id"]: node["foreign"] for node in as_json["nodes"]} == {100: 3, 101: 0, 102: 0}

    listing = run_tool("dfs-ls", manager=cluster.address).stdout.decode().split()
    assert listing == [f"file-{index}" for index in range(6)]
    async with Client(cluster.address) as client:
        for index in range(6):
            assert await client.read(f"file-{index}") == b"bytes %d" % index
    assert all(stray.read_bytes() == b"not dfsd's" for stray in strays)
    assert "foreign_entries" in (cluster.root / "node-100.log").read_text()

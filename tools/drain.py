"""dfsd drain: retire a storage node. Its files move to the other nodes (it gets no new ones) while progress is
printed, until it is empty and can be stopped; ``--undo`` takes it back, ``--forget`` drops an empty, stopped node
from the manager's records."""

from __future__ import annotations

import argparse
import asyncio
import sys

from dfsd.client import Client, FileUnavailable

from .common import add_manager_option, human_size, run

PROG = "dfsd drain"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dfsd drain``, among the subcommands of ``dfsd``."""
    parser = commands.add_parser(
        "drain", help="retire a storage node: move its files to the others, showing progress, then say when to stop it"
    )
    parser.add_argument("node_id", type=int, metavar="NODE_ID")
    parser.add_argument("--undo", action="store_true", help="take the node back: it gets new files again")
    parser.add_argument("--forget", action="store_true", help="drop an empty, stopped node from the manager's records")
    add_manager_option(parser)
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return run(PROG, args.manager, lambda client: drain(client, args.node_id, args.undo, args.forget))


async def drain(client: Client, node_id: int, undo: bool, forget: bool) -> int:
    status = await client.drain(node_id, undo, forget)
    if undo or forget:
        print(f"node {node_id} takes new files again" if undo else f"node {node_id} is forgotten")
        return 0
    while True:
        (node,) = [node for node in status.nodes if node.id == node_id]
        print(f"node {node_id}: {node.files} files left ({human_size(node.used)})", flush=True)
        if node.files - node.lost == 0:
            lost = f" ({node.lost} lost files stay recorded on it; see `dfsd status`)" if node.lost else ""
            print(
                f"node {node_id} is empty{lost}: stop its process now, then `dfsd drain {node_id} --forget` "
                "drops it from the records"
            )
            return 0
        if not node.up:
            print(f"{PROG}: node {node_id} is down; start it again so its files can move", file=sys.stderr)
            return int(FileUnavailable.code)
        await asyncio.sleep(0.5)
        status = await client.status()

"""dfsd rebalance: start evening out the file counts of the storage nodes now, and print progress until it is done."""

from __future__ import annotations

import argparse
import asyncio

from dfsd.client import Client

from .common import add_manager_option, run

PROG = "dfsd rebalance"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dfsd rebalance``, among the subcommands of ``dfsd``."""
    parser = commands.add_parser("rebalance", help="even out the file counts of the nodes now, showing progress")
    add_manager_option(parser)
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return run(PROG, args.manager, rebalance)


async def rebalance(client: Client) -> int:
    await client.rebalance()
    while True:
        await asyncio.sleep(0.5)
        status = await client.status()
        assert status.rebalance is not None
        counts = ", ".join(f"{node.id}: {node.files}" for node in status.nodes if node.up)
        print(f"moved {status.rebalance.moved}, failed {status.rebalance.failed}; files per node: {counts}", flush=True)
        if not status.rebalance.running:
            return 0

"""dfsd status: every manager (address, up or down, which one coordinates, its database), every storage node (up or
down, files, bytes, lost and orphaned files, last heartbeat), the totals, the rebalancer and any lost files, as aligned
tables (columns as wide as their widest cell), or one JSON object with --json for scripts."""

from __future__ import annotations

import argparse
import dataclasses

from dfsd.client import Client, ClusterStatus

from .common import add_manager_option, dump_json, format_table, human_size, human_time, run

PROG = "dfsd status"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dfsd status``, among the subcommands of ``dfsd``."""
    parser = commands.add_parser(
        "status",
        help="show every manager, every storage node and the totals",
        description="Show every manager (address, up or down, which one coordinates, its database), every storage\n"
        "node (up or down, files, bytes, lost and orphaned files, last heartbeat), the totals, the rebalancer and\n"
        "any lost files: aligned tables, or one JSON object with --json.",
        epilog="exit status:\n  0      success\n  1      the manager cannot be reached (start it, or fix --manager)\n"
        "  2-11   another error from the cluster, as for dfs-push (see its --help)\n  64     wrong command line",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object for scripts: managers and nodes (lists), files, bytes, lost (names), rebalance (or null)",
    )
    add_manager_option(parser)
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return run(PROG, args.manager, lambda client: print_status(client, as_json=args.json))


async def print_status(client: Client, as_json: bool = False) -> int:
    """The cluster as an aligned table (columns as wide as their widest cell), or as one JSON object."""
    status = await client.status()
    if as_json:
        data = dataclasses.asdict(status)
        data["lost"] = data["lost"] or []
        print(dump_json(data, indent=2))
        return 0
    if not status.nodes:
        print("no storage node has registered yet; start one with `dfsd storage --id N --manager HOST:PORT`")
    else:
        headers = (
            "NODE", "ADDRESS", "STATE", "FILES", "USED", "FREE", "DISK", "LOST", "ORPHANS", "FOREIGN", "LAST SEEN"
        )  # fmt: skip
        right = (True, False, False, True, True, True, True, True, True, True, False)
        rows = [
            (
                str(node.id),
                f"{node.host}:{node.port}",
                "up" if node.up else "DOWN",
                str(node.files),
                human_size(node.used),
                human_size(node.free),
                human_size(node.capacity),
                str(node.lost),
                str(node.orphans),
                str(node.foreign),
                human_time(node.last_seen) if node.last_seen else "never",
            )
            for node in status.nodes
        ]
        for line in format_table(headers, rows, right):
            print(line)
    up = sum(node.up for node in status.nodes)
    print(f"total: {up} of {len(status.nodes)} nodes up, {status.files} files, {human_size(status.bytes)}")
    if status.rebalance is not None:
        r = status.rebalance
        state = f"running, {r.remaining} moves left in this round" if r.running else "idle"
        auto = "automatic" if r.auto else "manual only (`dfsd rebalance`)"
        print(f"rebalance: {state}; {r.moved} files moved, {r.failed} moves failed; {auto}")
    if status.lost:
        print(f"LOST FILES ({len(status.lost)} shown; their nodes no longer have the bytes):")
        for name in status.lost:
            print(f"  {name!r}")
    _print_managers(status)
    return 0


def _print_managers(status: ClusterStatus) -> None:
    """One row per manager sharing the database (one, on SQLite), after a blank line."""
    if not status.managers:
        return
    print()
    rows = [
        (
            manager.address,
            "up" if manager.up else "DOWN",
            "coordinator" if manager.coordinator else "-",
            manager.database,
        )
        for manager in status.managers
    ]
    for line in format_table(("MANAGER", "STATE", "ROLE", "DATABASE"), rows, (False, False, False, False)):
        print(line)

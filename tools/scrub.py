"""dfsd scrub: have every storage node re-read every file it holds, and list those whose bytes no longer match their
recorded SHA-256 (CORRUPT) or have vanished (MISSING); exit 7 if there are any."""

from __future__ import annotations

import argparse
import sys

from dfsd.client import ChecksumMismatch, Client

from .common import add_manager_option, human_size, run

PROG = "dfsd scrub"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dfsd scrub``, among the subcommands of ``dfsd``."""
    parser = commands.add_parser(
        "scrub", help="re-read every file on every node and report any whose bytes no longer match (exit 7 if so)"
    )
    add_manager_option(parser)
    parser.set_defaults(execute=execute)


def execute(args: argparse.Namespace) -> int:
    return run(PROG, args.manager, scrub)


async def scrub(client: Client) -> int:
    report = await client.scrub()
    print(
        f"checked {report.checked} files ({human_size(report.bytes)}): {len(report.corrupt)} corrupt, "
        f"{len(report.missing)} missing, {report.skipped} not checked (node down)"
    )
    for label, names in (("CORRUPT", report.corrupt), ("MISSING", report.missing)):
        for name in names:
            print(f"  {label}  {name!r}")
    if report.corrupt or report.missing:
        print(f"{PROG}: error 7: some files no longer match their checksum; see above", file=sys.stderr)
        return int(ChecksumMismatch.code)
    return 0

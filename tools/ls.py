"""dfs-ls: list the names in the cluster, one per line; -l as an aligned table; --json for scripts.

The listing is printed as the manager's pages arrive, so a cluster with millions of names never sits in memory here.
That is why the table's columns have fixed widths (a size never needs more than "1023.9 KiB", a time is always
19 characters) instead of widths measured over every row; the name comes last, so any name fits. Names holding
control characters are shown quoted and escaped in the table (a newline must not start a fake row); ``--json`` gives
every name exactly, as a JSON array of objects, one per line.
"""

from __future__ import annotations

import sys
import time

from dfsd.client import Client, FileInfo

from .common import ArgumentParser, dump_json, format_row, human_size, printable, run

HEADERS = ("SIZE", "STORED ON", "UPLOADED", "AVAILABLE", "NAME")
WIDTHS = (10, 9, 19, 9, 0)
RIGHT = (True, False, False, False, False)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dfs-ls", description="List the files whose names start with PREFIX (default: all).")
    parser.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    parser.add_argument(
        "-l", "--long", action="store_true", help="a table: size, storage node, upload time, availability, name"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="a JSON array of objects (name, size in bytes, sha256 in hex, node, created as unix time, available)",
    )
    args = parser.parse_args(argv)

    async def listing(client: Client) -> None:
        out = sys.stdout
        count = 0
        async for info in client.list(args.prefix):
            if args.json:
                out.write(("[\n" if count == 0 else ",\n") + dump_json(info))
            elif args.long:
                if count == 0:
                    out.write(format_row(HEADERS, WIDTHS, RIGHT) + "\n")
                out.write(long_row(info) + "\n")
            else:
                out.write(info.name + "\n")
            count += 1
        if args.json:
            out.write("[]\n" if count == 0 else "\n]\n")
        out.flush()

    return run("dfs-ls", args.manager, listing)


def long_row(info: FileInfo) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
    cells = (human_size(info.size), f"node {info.node}", when, "yes" if info.available else "NO", printable(info.name))
    return format_row(cells, WIDTHS, RIGHT)


if __name__ == "__main__":
    sys.exit(main())

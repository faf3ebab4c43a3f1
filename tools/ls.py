"""dfs-ls: list the names in the cluster, one per line; -l adds size, node and time."""

from __future__ import annotations

import sys
import time

from dfsd.client import Client

from .common import ArgumentParser, run


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dfs-ls", description="List the files whose names start with PREFIX (default: all).")
    parser.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    parser.add_argument("-l", "--long", action="store_true", help="show size, storage node and upload time")
    args = parser.parse_args(argv)

    async def listing(client: Client) -> None:
        out = sys.stdout
        async for info in client.list(args.prefix):
            if args.long:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
                flag = "" if info.available else "  (unavailable: node down)"
                out.write(f"{info.size:>14}  node {info.node:<6} {when}  {info.name}{flag}\n")
            else:
                out.write(info.name + "\n")
        out.flush()

    return run("dfs-ls", args.manager, listing)


if __name__ == "__main__":
    sys.exit(main())

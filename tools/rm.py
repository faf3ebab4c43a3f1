"""dfs-rm: delete files from the cluster."""

from __future__ import annotations

import sys

from dfsd.client import Client

from .common import ArgumentParser, run


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dfs-rm", description="Delete the files NAME... from the cluster.")
    parser.add_argument("names", metavar="NAME", nargs="+")
    args = parser.parse_args(argv)

    async def remove(client: Client) -> None:
        for name in args.names:
            await client.delete(name)

    return run("dfs-rm", args.manager, remove)


if __name__ == "__main__":
    sys.exit(main())

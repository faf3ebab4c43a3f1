"""dfs-rm: delete files from the cluster.

Like rm(1) and dfs-push with several files, every NAME is tried even after one fails; each failure is reported on
standard error and the exit status is the first failure's.
"""

from __future__ import annotations

import sys

from dfsd.client import Client, DfsError

from .common import ArgumentParser, Failures, printable, run

PROG = "dfs-rm"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Delete the files NAME... from the cluster.")
    parser.add_argument("names", metavar="NAME", nargs="+")
    args = parser.parse_args(argv)

    async def remove(client: Client) -> int:
        failures = Failures(PROG)
        for name in args.names:
            try:
                await client.delete(name)
            except DfsError as err:
                failures.error(err, printable(name) if len(args.names) > 1 else None)
        return failures.status

    return run(PROG, args.manager, remove)


if __name__ == "__main__":
    sys.exit(main())

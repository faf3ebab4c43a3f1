"""dfs-push: upload a file (or standard input) to the cluster."""

from __future__ import annotations

import os
import sys

from dfsd.client import Client

from .common import EXIT_NO_INPUT, ArgumentParser, run


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dfs-push", description="Upload PATH to the cluster, under its base name by default.")
    parser.add_argument("path", metavar="PATH", help="the file to upload, or - for standard input (needs --name)")
    parser.add_argument("--name", help="store it under NAME instead of the file's base name")
    args = parser.parse_args(argv)
    if args.path == "-" and not args.name:
        parser.error("reading standard input (-) needs --name NAME")
    name = args.name or os.path.basename(args.path)
    if not name:
        parser.error(f"{args.path!r} has no base name; give --name NAME")

    async def push(client: Client) -> int:
        if args.path == "-":
            stored = await client.put(name, sys.stdin.buffer)
        else:
            try:
                source = open(args.path, "rb")
            except OSError as err:
                print(f"dfs-push: cannot read {args.path}: {err.strerror}", file=sys.stderr)
                return EXIT_NO_INPUT
            with source:
                stored = await client.put(name, source, size=os.fstat(source.fileno()).st_size)
        print(f"stored {name} ({stored.size} bytes, sha256 {stored.sha256.hex()})", file=sys.stderr)
        return 0

    return run("dfs-push", args.manager, push)


if __name__ == "__main__":
    sys.exit(main())

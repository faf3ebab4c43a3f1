"""dfs-cat: download a file to standard output, or to a file with -o.

With -o the bytes go to a temporary file beside the target, renamed into place only once the checksum has been
verified, so a failed download never leaves a file that looks complete. On standard output bytes are written as they
arrive (a pipe cannot take them back): a checksum failure then exits 7 after the bytes, and the reader must discard
them.
"""

from __future__ import annotations

import os
import sys
import tempfile

from dfsd.client import Client

from .common import EXIT_IO_ERROR, ArgumentParser, run


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dfs-cat", description="Write the file NAME from the cluster to standard output.")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.add_argument("--offset", type=int, default=0, help="start at byte N (default 0)")
    parser.add_argument("--length", type=int, default=None, help="read at most M bytes (default: to the end)")
    args = parser.parse_args(argv)
    if args.offset < 0 or (args.length is not None and args.length < 0):
        parser.error("--offset and --length must not be negative")

    async def cat(client: Client) -> int:
        if args.output is None:
            await client.get_file(args.name, sys.stdout.buffer, offset=args.offset, length=args.length)
            sys.stdout.buffer.flush()
            return 0
        directory = os.path.dirname(os.path.abspath(args.output))
        try:
            fd, partial = tempfile.mkstemp(prefix=".dfs-cat-", dir=directory)
        except OSError as err:
            print(f"dfs-cat: cannot write in {directory}: {err.strerror}", file=sys.stderr)
            return EXIT_IO_ERROR
        try:
            with os.fdopen(fd, "wb") as file:
                await client.get_file(args.name, file, offset=args.offset, length=args.length)
            os.replace(partial, args.output)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return 0

    return run("dfs-cat", args.manager, cat)


if __name__ == "__main__":
    sys.exit(main())

"""dfs-cat: download a file to standard output, or to a file with -o.

With -o the bytes go to a temporary file beside the target, renamed into place only once the checksum has been
verified, so a failed download never leaves a file that looks complete. A target that exists and is neither a regular
file nor a directory (a device such as /dev/null, a named pipe) cannot be replaced whole: it is written into as
standard output is (renamed over, /dev/null became a regular file when run as root). On standard output bytes are
written as they arrive, a few MiB at a time (a pipe cannot take them back): a checksum failure then exits 7 after the
bytes, and the reader must discard them. Either way the writing is done in a thread, so the download goes on while it
writes; with -o it goes around the page cache where the file system allows (``O_DIRECT``, see ``dfsd/directio.py``),
which cut the command's CPU time by more than a third (2.6 to 1.65 s per GiB, measured on a busy machine).

A progress bar (bytes, rate, time left) is drawn on standard error when it is a terminal, unless -q is given or the
bytes themselves go to that terminal (the bar would be drawn in the middle of them).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from typing import BinaryIO

from dfsd.client import Client

from . import progress
from .common import EXIT_IO_ERROR, ArgumentParser, run, say

PROG = "dfs-cat"


class CannotWrite(Exception):
    """The local output failed; ``__cause__`` is the OSError."""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Write the file NAME from the cluster to standard output.")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.add_argument("--offset", type=int, default=0, help="start at byte N (default 0)")
    parser.add_argument("--length", type=int, default=None, help="read at most M bytes (default: to the end)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.offset < 0 or (args.length is not None and args.length < 0):
        parser.error("--offset and --length must not be negative")
    show = progress.wanted(args.quiet) and not (args.output is None and sys.stdout.isatty())

    async def fetch(client: Client, target: BinaryIO | int) -> None:
        """Download into a file object, or into the regular file open on a descriptor (written around the cache)."""
        download = await client.get(args.name, offset=args.offset, length=args.length)
        with progress.counter(download.info.length, args.name, show) as update:
            try:
                if isinstance(target, int):
                    await download.save_to_fd(target, update)
                else:
                    await download.save(target, update)
            except OSError as err:
                raise CannotWrite() from err

    async def fetch_into(client: Client, path: str) -> None:
        """Download into the device or named pipe at ``path``, as into standard output."""
        try:
            target = open(path, "wb")  # closed below: only a failure to open it is caught here
        except OSError as err:
            raise CannotWrite() from err
        with target:
            await fetch(client, target)

    async def cat(client: Client) -> int:
        if args.output is None:
            try:
                await fetch(client, sys.stdout.buffer)
            except CannotWrite as err:
                return _cannot_write("standard output", err, "check where standard output goes (a full disk?)")
            return 0
        if _written_into(args.output):
            try:
                await fetch_into(client, args.output)
            except CannotWrite as err:
                return _cannot_write(args.output, err, "check that you may write to it, and what reads from it")
            return 0
        directory = os.path.dirname(os.path.abspath(args.output))
        try:
            fd, partial = tempfile.mkstemp(prefix=".dfs-cat-", dir=directory)
        except OSError as err:
            say(f"{PROG}: cannot write in {directory}: {err.strerror}")
            say(f"{PROG}: hint: give -o a path in a directory that exists and that you may write to")
            return EXIT_IO_ERROR
        try:
            try:
                await fetch(client, fd)
            finally:
                os.close(fd)
            os.replace(partial, args.output)
        except CannotWrite as err:
            return _cannot_write(args.output, err, "free space there, or give -o a path on another disk")
        except OSError as err:  # the rename: -o names a directory, say
            say(f"{PROG}: cannot write {args.output}: {err.strerror}")
            say(f"{PROG}: hint: give -o the path of a file (not a directory) that you may replace")
            return EXIT_IO_ERROR
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return 0

    return run(PROG, args.manager, cat)


def _written_into(path: str) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a directory (a device, a named pipe): the download
    is written into it as it arrives, since it cannot be replaced whole."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _cannot_write(target: str, err: CannotWrite, hint: str) -> int:
    cause = err.__cause__
    if isinstance(cause, BrokenPipeError):
        return EXIT_IO_ERROR  # the reader went away (`dfs-cat big | head`): nothing to say
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    say(f"{PROG}: cannot write {target}: {reason}")
    say(f"{PROG}: hint: {hint}")
    return EXIT_IO_ERROR


if __name__ == "__main__":
    sys.exit(main())

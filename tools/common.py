"""What every client tool shares: the --manager option, running the client, and turning errors into exit codes.

Exit status: 0 on success; the dfsd error code (1-11, see PROTOCOL.md) when the cluster refused; 64 for a wrong
command line; 66 when a local input file cannot be read; 74 when local output cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from dfsd.protocol import DfsError

from dfsd.aio import run as run_async
from dfsd.client import Client

EXIT_USAGE = 64
EXIT_NO_INPUT = 66
EXIT_IO_ERROR = 74

EXIT_STATUS_HELP = """\
exit status:
  0      success
  1-11   the cluster's error code: 1 servers unavailable, 2 file does not exist, 3 file name already exists,
         4 file unavailable (its node is down), 5 bad request, 6 protocol error, 7 checksum mismatch,
         8 storage full, 9 not authorised, 10 internal error, 11 node id in use
  64     wrong command line
  66     a local input file cannot be read
  74     local output cannot be written
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but exiting 64 (EX_USAGE) on a wrong command line: 2 means "file does not exist" here."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            epilog=EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,  # type: ignore[arg-type]
        )
        self.add_argument(
            "--manager", metavar="HOST:PORT", help="the manager to talk to (default: $DFS_MANAGER, else 127.0.0.1:8000)"
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run(prog: str, manager: str | None, work: Callable[[Client], Awaitable[int | None]]) -> int:
    """Run ``work`` with a connected client; print any error as ``prog: error N: message``; return the exit status."""

    async def main() -> int | None:
        async with Client(manager) as client:
            return await work(client)

    try:
        return run_async(main()) or 0
    except DfsError as err:
        print(f"{prog}: {err.describe()}", file=sys.stderr)
        return int(err.code)
    except ValueError as err:  # a malformed --manager
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_IO_ERROR
    except KeyboardInterrupt:
        return 130

"""Command lines for every dfsd command: argparse, but a wrong command line exits 64 (EX_USAGE), because exit status 2
means "file does not exist" here (the cluster's error codes are the tools' exit statuses)."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 64


class UsageParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        print(f"{self.prog}: hint: `{self.prog} --help` lists the options and exit statuses", file=sys.stderr)
        sys.exit(EXIT_USAGE)

"""The daemons' log: lines are written out once per turn of the event loop, and none is lost on the way out.

Each case runs in a process of its own (the logging configuration is global), which logs and then ends its loop."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import asyncio, os, threading
import structlog
from dfsd import aio, logs

logs.configure("info", json=True)
log = structlog.get_logger("test")

async def main():
    log.info("first")
    await asyncio.sleep(0)
    log.info("second")
    thread = threading.Thread(target=lambda: log.info("from_a_thread"))
    thread.start()
    thread.join()
    log.info("last_in_the_loop")  # the loop ends before the turn that would write it

aio.run(main())
{ending}
"""


def events(ending: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(ending=ending)], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line)["event"] for line in done.stderr.splitlines()]


IN_THE_LOOP = ["first", "second", "from_a_thread", "last_in_the_loop"]


def test_lines_the_loop_left_waiting_are_written_at_exit() -> None:
    assert events("") == IN_THE_LOOP


def test_a_line_logged_outside_the_loop_is_written_at_once_after_those_waiting() -> None:
    """Written before an ``os._exit``, which runs no exit handler."""
    assert events("log.info('after_the_loop'); os._exit(0)") == [*IN_THE_LOOP, "after_the_loop"]


def test_flush_writes_what_waits() -> None:
    """What a daemon does before ``os._exit`` (a second Ctrl-C)."""
    assert events("logs.flush(); os._exit(0)") == IN_THE_LOOP

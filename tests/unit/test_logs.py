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


REQUEST_LINES = """
import structlog
from dfsd import logs

logs.configure({level!r}, json={json})
for log in (structlog.get_logger("test"), structlog.get_logger("test").bind(node=100)):
    fields = dict(op="put", peer="127.0.0.1:4567", duration_ms=3.125, outcome="ok", name="a/\\u00e9", size=1024)
    log.info("request", **fields)
    logs.RequestLines(log).write(**fields)
    structlog.contextvars.bind_contextvars(trace="t1")
    log.info("request", **fields)
    logs.RequestLines(log).write(**fields)
    structlog.contextvars.clear_contextvars()
"""


def request_lines(level: str, json: bool) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", REQUEST_LINES.format(level=level, json=json)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr.splitlines()


def test_a_request_line_written_directly_is_the_line_structlog_writes() -> None:
    """Key for key and in order (the bound context first, contextvars after the event); only the time differs."""
    lines = [json.loads(line) for line in request_lines("info", True)]
    assert len(lines) == 8
    for structlogs, direct in zip(lines[::2], lines[1::2], strict=True):
        assert direct.pop("timestamp") and structlogs.pop("timestamp")
        assert list(direct.items()) == list(structlogs.items())


def test_request_lines_follow_the_configured_level_and_renderer() -> None:
    assert request_lines("warning", True) == []
    console = request_lines("info", False)
    assert len(console) == 8 and not console[1].startswith("{")

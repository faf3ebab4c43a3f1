"""Logging for the daemons: structlog, human-readable lines on a terminal and one JSON object per line otherwise.

Every request a daemon answers is logged at info level, one line each (``service.py``): it is the access log that
operators and the tests read to learn what happened to a request. A small file's request costs the manager and the
node some 100-300 µs of CPU in all, so a line must be cheap: the JSON one is rendered by one JSON encoder made once
(structlog's default builds a new encoder per line) and stamped from a clock whose date and time of day are formatted
once a second (``datetime.isoformat`` per line cost as much as the rest of the line), about half of structlog's stock
cost. Lines below the configured level cost next to nothing (``make_filtering_bound_logger``). The request line,
logged for every request, skips structlog's chain of calls altogether (``RequestLines``): it builds the same dict the
chain would, in the same order, and encodes it with the same encoder; the chain's calls cost as much as the rendering.

Lines are written out together, once per turn of the event loop (``_Lines``): writing each one as it came was one
system call per request in every daemon, and in a storage node each such call hands the GIL to a disk thread that
the loop then waits to take it back from. A line logged outside the loop's thread, or with no loop running (before
it starts, after it ends), is written at once, after those waiting; whatever waits is written when the loop's turn
ends, at exit and when ``flush`` is called (before ``os._exit``), so a daemon that shuts down or fails loses no line;
only a kill -9 can lose some: those of the one turn it interrupts.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import json
import logging
import sys
import threading
import time
from typing import Any

import structlog


def configure(level: str = "info", json: bool | None = None) -> None:
    """Send structured log lines to standard error; ``json=None`` picks JSON unless standard error is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    global _REQUESTS_DIRECT
    _REQUESTS_DIRECT = json and logging.getLevelNamesMapping()[level.upper()] <= logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_JSON_LINE.encode)
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _STAMP,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_names: _LINES,
        cache_logger_on_first_use=True,
    )


# True while the chain ``configure`` set up renders info lines as JSON: then ``RequestLines`` writes them itself.
_REQUESTS_DIRECT = False


class RequestLines:
    """The ``request`` lines of one logger (``log.info("request", **fields)``), written as structlog's JSON chain
    would write them, key for key and in the same order (the logger's bound context, the fields, ``event``, what
    contextvars add, ``level``, ``timestamp``), without its calls: those cost 3 µs a line of the 6 (1 KiB puts
    write two lines each, one in the manager and one in the node). Another configuration (a terminal's coloured
    lines, a level above info) goes through structlog as any line does."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._context = structlog.get_context(log)

    def write(self, **fields: Any) -> None:
        if not _REQUESTS_DIRECT:
            self._log.info("request", **fields)
            return
        line = self._context.copy()
        line.update(fields)
        line["event"] = "request"
        structlog.contextvars.merge_contextvars(None, "info", line)
        line["level"] = "info"
        _STAMP(None, "info", line)
        _LINES.msg(_JSON_LINE.encode(line))


def flush() -> None:
    """Write out every line logged so far."""
    _LINES.flush()


class _Lines:
    """structlog's logger (the methods it calls, one per level, all ``msg``): lines to standard error, written once
    per turn of the event loop."""

    def __init__(self) -> None:
        self._waiting: list[str] = []
        self._lock = threading.Lock()  # lines come from the loop's thread, and seldom from others (disk threads)
        self._flusher: asyncio.AbstractEventLoop | None = None  # the loop that will write what waits, if any
        self._flusher_thread = 0  # the thread it runs in

    def msg(self, message: str) -> None:
        with self._lock:
            self._waiting.append(message)
            if self._in_flushers_turn():
                return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nobody would write it later
            loop = None
        with self._lock:
            if loop is not None and self._flusher is loop:
                return
            if loop is not None and self._flusher is None:
                self._flusher, self._flusher_thread = loop, threading.get_ident()
                loop.call_soon(self.flush)
                return
        self.flush()  # outside the lock: flush takes it

    def _in_flushers_turn(self) -> bool:
        """This thread runs the loop that will write what waits (the usual case, answered without asking for the
        running loop, which asks the kernel for the process id each time)."""
        flusher = self._flusher
        return flusher is not None and self._flusher_thread == threading.get_ident() and flusher.is_running()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        with self._lock:  # held while writing, so that lines from two threads keep their order
            lines, self._waiting, self._flusher = self._waiting, [], None
            if lines:
                lines.append("")
                sys.stderr.write("\n".join(lines))
                sys.stderr.flush()


_LINES = _Lines()
atexit.register(flush)


def _unknown_to_json(value: Any) -> Any:
    """What a value JSON cannot hold becomes: its ``__structlog__()`` if it has one, else its repr (as structlog's own
    renderer does)."""
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(value)


class _JsonLine(json.JSONEncoder):
    """The JSON of one line, as ``json.JSONEncoder`` writes it with ``default=_unknown_to_json``. Its C encoder is made
    once here rather than per line as ``encode`` does (with the Python layers around it, 40 % of a line's JSON):
    without the check for circular values, which a line's flat values cannot be, and which would fail either way."""

    def __init__(self) -> None:
        super().__init__(default=_unknown_to_json)
        make = getattr(json.encoder, "c_make_encoder", None)  # not in the stubs: CPython's C accelerator
        self._c_encode = (
            None
            if make is None
            else make(None, self.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        )

    def encode(self, o: Any, **_renderer_options: Any) -> str:  # structlog passes its own ``default``: ours is set
        if self._c_encode is None:  # a Python without the C accelerator
            return super().encode(o)
        return "".join(self._c_encode(o, 0))


_JSON_LINE = _JsonLine()


class _UtcStamp:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, always with microseconds: ``2026-11-29T03:27:50.123456Z``."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


_STAMP = _UtcStamp()

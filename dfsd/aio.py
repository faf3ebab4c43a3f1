"""Running a coroutine on uvloop, the event loop every dfsd process uses (Python 3.11's asyncio.run has no factory).

(Measured and not kept: a GIL switch interval of 0.5 ms instead of Python's 5 ms, so that a storage node's disk thread
back from its sync takes the GIL sooner from a busy loop: 1 KiB puts 0.83-1.31 times as many a second, median 0.87, 4
pairs at load average 7 to 8, for more CPU per put.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

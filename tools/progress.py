"""Progress bars for dfs-push and dfs-cat: bytes done, rate and time left, drawn by tqdm on standard error.

A bar is drawn only for a person watching: when standard error is a terminal and -q was not given. Anywhere else (a
pipe, a file, a script's capture) ``bar`` is a ``Tally`` that counts and draws nothing, so the same code runs, nothing
extra is written, and tqdm is never imported (26-37 ms of dfs-push's start-up by ``python -X importtime`` on a busy
machine; dfs-bench times the commands as processes, start-up included); ``counter`` goes further and, with no bar to
draw, gives no function to call at all.

A bar follows the terminal's size as it changes, except on a terminal that reports 0 columns or rows (a pseudo-terminal
under ``script``, some CI runners): tqdm would draw nothing there, so the bar is drawn as on an 80x24 terminal instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from .common import printable

if TYPE_CHECKING:
    from tqdm import tqdm

# Room left for the bar itself on an 80-column terminal once the counters are drawn.
DESCRIPTION_WIDTH = 24

# The size assumed for a terminal that does not say its own: the classic terminal's.
FALLBACK_COLUMNS = 80
FALLBACK_ROWS = 24


def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw progress: not with -q, and only on a terminal."""
    stream = sys.stderr if stream is None else stream
    return not quiet and stream.isatty()


class Tally:
    """What a bar counts (``n``, ``update``), with nothing drawn: ``bar`` when no bar is wanted."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description_str(self, desc: str) -> None:
        pass

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(total: int | None, description: str, enabled: bool) -> tqdm | Tally:
    """A byte-counting bar on standard error (total None: size unknown, so no percentage or ETA); a ``Tally`` unless
    ``enabled``. Use it as a context manager so it is closed (and its line finished) whatever happens."""
    if not enabled:
        return Tally()
    from tqdm import tqdm  # here, not at the top: see the module's docstring

    tqdm.monitor_interval = 0  # its watchdog thread only tunes bars that stall; ours are updated at every chunk
    size = fixed_size(sys.stderr)
    columns, rows = size if size is not None else (None, None)
    return tqdm(
        total=total,
        desc=label(description),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        ncols=columns,
        nrows=rows,
        dynamic_ncols=size is None,
        leave=True,
        mininterval=0.1,
    )


@contextlib.contextmanager
def counter(total: int | None, description: str, enabled: bool) -> Iterator[Callable[[int], object] | None]:
    """The ``update`` of a bar as ``bar`` draws it, to be told the length of each chunk; None, and no tqdm imported,
    unless ``enabled``."""
    if not enabled:
        yield None
        return
    with bar(total, description, enabled) as shown:
        yield shown.update


def label(name: str) -> str:
    """A file name shortened to fit in front of a bar, keeping its end (where names differ most)."""
    text = printable(name)
    return text if len(text) <= DESCRIPTION_WIDTH else "..." + text[-(DESCRIPTION_WIDTH - 3) :]


def fixed_size(stream: TextIO) -> tuple[int, int] | None:
    """(columns, rows) to draw at on a terminal that reports 0 of either (tqdm would hide the bar there); None, to
    follow the terminal's own size, on any other."""
    try:
        reported = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):  # not a terminal after all, or no file descriptor
        return None
    if reported.columns and reported.lines:
        return None
    return reported.columns or FALLBACK_COLUMNS, reported.lines or FALLBACK_ROWS

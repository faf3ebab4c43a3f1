"""Lost files: recorded on a node that no longer has their bytes.

A lost file is never dropped silently: its row stays, marked with the time it was found missing, reads of it answer
"file unavailable", and ``dfsd status`` names it. Two things find files lost (or found again): reconciling a node's
inventory when it registers, and a node answering a read or a scrub that it lacks a file (``inflight.py`` decides
whether that is a loss). Both mark them here, the one place, which logs them loudly and refreshes the count of lost
files that the metrics thread reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from .store import MetadataStore

log = structlog.get_logger("dfsd.manager")

# Lost files named in a status answer; the log names every one.
MAX_LOST_SHOWN = 100

# File ids named in the log line of a reconciliation that found files lost; ``dfsd status`` names the files.
MAX_LOST_LOGGED = 20


class LostFiles:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self.count = 0  # refreshed whenever files are marked lost or found, for the metrics thread

    async def mark(self, node_id: int, lost: list[int], found: Sequence[int] = (), name: str | None = None) -> None:
        """Mark files of ``node_id`` lost (it lacks their bytes) and ``found`` ones present again. ``name``: the one
        lost file a read or a scrub came upon, logged by name."""
        if lost:
            if name is not None:
                log.error("file_lost", name=name, file_id=lost[0], node=node_id)
            else:
                log.error(
                    "files_lost",
                    node=node_id,
                    count=len(lost),
                    file_ids=lost[:MAX_LOST_LOGGED],
                    hint="see `dfsd status` for names",
                )
            await self._store.set_lost(lost, time.time(), node_id)
        if found:
            log.warning("files_found", node=node_id, count=len(found))
            await self._store.set_lost(list(found), None, node_id)
        if lost or found:
            await self.refresh()

    async def refresh(self) -> list[str]:
        """Count the lost files (for metrics) and return the first names (for status)."""
        self.count, names = await self._store.lost_files(MAX_LOST_SHOWN)
        return names

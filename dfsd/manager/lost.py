"""Lost files: recorded on a node that no longer has their bytes.

A lost file is never dropped silently: its row stays, marked with the time it was found missing, reads of it answer
"file unavailable", and ``dfsd status`` names it. This module keeps the count of lost files that the metrics thread
reads; it is refreshed whenever files are marked lost or found, and whenever a status is built.
"""

from __future__ import annotations

from .store import MetadataStore

# Lost files named in a status answer; the log names every one.
MAX_LOST_SHOWN = 100


class LostFiles:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self.count = 0  # refreshed whenever files are marked lost or found, for the metrics thread

    async def refresh(self) -> list[str]:
        """Count the lost files (for metrics) and return the first names (for status)."""
        self.count, names = await self._store.lost_files(MAX_LOST_SHOWN)
        return names

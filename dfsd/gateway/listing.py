"""ListObjects (V1 and V2) and ListObjectVersions as pure functions over a sorted run of keys.

Theory of operation. The manager lists names in byte order of their UTF-8 (SQLite compares TEXT with memcmp), which
for valid text is also Python's order of ``str``; S3 lists in the same order. The server asks the manager for the
bucket's names after the start point (marker, start-after or continuation token) with the request's prefix, strips
the bucket, and feeds the objects to a ``ListingBuilder`` in order until ``add`` says stop; ``result`` is the page.

The builder rolls keys that hold the delimiter after the prefix into one common prefix each (a common prefix counts
once towards max-keys, however many keys it stands for, and keys inside a common prefix that was returned on an
earlier page are skipped, because the marker is that prefix). It stops one item past max-keys: that item proves the
page is truncated, and the last item returned is where the next page starts (``next_marker``, also the
continuation token's content).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import S3Error

MAX_KEYS = 1000  # S3 answers at most 1000 keys or prefixes per page, whatever max-keys asks for


@dataclass(frozen=True)
class ObjectEntry:
    """One object as a listing shows it; ``etag`` quoted, ``last_modified`` in seconds since the epoch."""

    key: str
    size: int
    etag: str
    last_modified: float


@dataclass
class ListResult:
    contents: list[ObjectEntry] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_marker: str | None = None  # the last key or common prefix on this page


class ListingBuilder:
    """Builds one listing page from objects fed in ascending key order; see the module docstring."""

    def __init__(self, *, prefix: str = "", delimiter: str | None = None, max_keys: int = MAX_KEYS, after: str = ""):
        self.prefix = prefix
        self.delimiter = delimiter or None
        self.max_keys = max_keys
        self.after = after
        self._result = ListResult()
        self._count = 0
        # A common prefix equal to the marker was returned on the previous page: its keys are skipped.
        self._last_prefix: str | None = after or None
        self._stopped = max_keys <= 0

    def add(self, entry: ObjectEntry) -> bool:
        """Take the next object; False means the page is complete and the caller should stop feeding."""
        if self._stopped:
            return False
        key = entry.key
        if key <= self.after or not key.startswith(self.prefix):
            return True
        common = self._common_prefix(key)
        if common is not None and common == self._last_prefix:
            return True
        if self._count >= self.max_keys:
            self._result.is_truncated = True
            self._stopped = True
            return False
        self._count += 1
        if common is None:
            self._result.contents.append(entry)
            self._result.next_marker = key
        else:
            self._result.common_prefixes.append(common)
            self._result.next_marker = common
            self._last_prefix = common
        return True

    def _common_prefix(self, key: str) -> str | None:
        if self.delimiter is None:
            return None
        index = key.find(self.delimiter, len(self.prefix))
        return None if index < 0 else key[: index + len(self.delimiter)]

    def result(self) -> ListResult:
        return self._result


def list_page(entries: Iterable[ObjectEntry], **options: object) -> ListResult:
    """One page from ``entries`` (ascending keys); ``options`` are ``ListingBuilder``'s."""
    builder = ListingBuilder(**options)  # type: ignore[arg-type]
    for entry in entries:
        if not builder.add(entry):
            break
    return builder.result()


def parse_max_keys(value: str | None, limit: int = MAX_KEYS) -> int:
    """max-keys (or max-parts, max-uploads) from the query: default and ceiling ``limit``; else InvalidArgument."""
    if value is None:
        return limit
    if not value.isdigit():
        raise S3Error("InvalidArgument", f"max-keys must be a non-negative integer, not {value!r}.")
    return min(int(value), limit)


def check_encoding_type(value: str | None) -> str | None:
    """encoding-type: absent or ``url``; anything else is InvalidArgument, as in S3."""
    if value is not None and value != "url":
        raise S3Error("InvalidArgument", f"Invalid Encoding Method specified in Request: {value!r}; use 'url'.")
    return value


def continuation_token(next_marker: str) -> str:
    """The opaque token for a V2 page that ends at ``next_marker``."""
    return base64.urlsafe_b64encode(next_marker.encode("utf-8")).decode("ascii")


def marker_of_token(token: str) -> str:
    """The marker a V2 continuation token stands for; a token we did not make is InvalidArgument."""
    try:
        return base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect.") from None


def v2_start(continuation: str | None, start_after: str | None) -> str:
    """Where a V2 listing starts: after the continuation token's marker if given, else after start-after."""
    if continuation is not None:
        return marker_of_token(continuation)
    return start_after or ""

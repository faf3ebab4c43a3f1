"""Which bytes of an object a GET answers with: the Range header and the conditional headers, as pure functions.

Theory of operation. ``parse_range`` reads ``Range: bytes=a-b | a- | -n`` against the object's size. Like S3 (and
RFC 9110, which lets a server ignore a Range it does not support) a header that is not one well-formed byte range is
ignored and the whole object is sent; a well-formed range that starts past the end is ``InvalidRange`` (416); an end
past the last byte is cut to it. ``evaluate`` applies If-Match, If-Unmodified-Since, If-None-Match and
If-Modified-Since in RFC 9110's order (section 13.2.2), which gives S3's documented answers for the combinations it
lists: If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since. Dates that do not parse are
ignored, as the RFC says; comparisons are to the second, since HTTP dates carry no fractions.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache

from .errors import S3Error
from .etags import unquote_etag

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes from ``start`` of an object of ``size`` bytes."""

    start: int
    length: int
    size: int

    @property
    def content_range(self) -> str:
        """The Content-Range header of a 206 answer."""
        return f"bytes {self.start}-{self.start + self.length - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range a Range header asks of a ``size``-byte object; None means the whole object (200)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(header, size)
        suffix = min(suffix, size)
        return ByteRange(size - suffix, suffix, size)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # not a valid range: ignored, as RFC 9110 says
    if start >= size:
        raise _unsatisfiable(header, size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return ByteRange(start, end - start + 1, size)


def _unsatisfiable(header: str, size: int) -> S3Error:
    return S3Error("InvalidRange", f"The range {header!r} is not satisfiable: the object is {size} bytes long.")


class Precondition(enum.Enum):
    PROCEED = 200
    NOT_MODIFIED = 304
    FAILED = 412


@dataclass(frozen=True)
class Conditions:
    """The conditional headers of a request, as sent (None when absent)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


def evaluate(conditions: Conditions, etag: str, last_modified: float, *, method: str = "GET") -> Precondition:
    """Whether a request on an object with this ETag and modification time proceeds, is 304, or is 412."""
    modified = int(last_modified)
    if conditions.if_match is not None:
        if not _etag_matches(conditions.if_match, etag):
            return Precondition.FAILED
    elif (since := _http_date(conditions.if_unmodified_since)) is not None and modified > since:
        return Precondition.FAILED
    read = method.upper() in ("GET", "HEAD")
    if conditions.if_none_match is not None:
        if _etag_matches(conditions.if_none_match, etag):
            return Precondition.NOT_MODIFIED if read else Precondition.FAILED
    elif read and (since := _http_date(conditions.if_modified_since)) is not None and modified <= since:
        return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def _etag_matches(header: str, etag: str) -> bool:
    """Whether a list of ETags (or ``*``) names ``etag``; weak and strong forms compare alike, as S3 does."""
    if header.strip() == "*":
        return True
    wanted = unquote_etag(etag)
    return any(unquote_etag(candidate) == wanted for candidate in header.split(","))


def _http_date(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def http_date(seconds: float) -> str:
    """An HTTP date (Last-Modified, Expires) for seconds since the epoch."""
    return _http_date_of_second(int(seconds))


@lru_cache(maxsize=1024)  # every GET and HEAD answers one; objects written in the same second share it
def _http_date_of_second(second: int) -> str:
    return formatdate(second, usegmt=True)

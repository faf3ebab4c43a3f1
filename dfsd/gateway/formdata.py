"""A streaming multipart/form-data parser, sans-I/O: bytes in, parts' headers and data out, never a whole part held.

Theory of operation. A body is ``--BOUNDARY\\r\\n``, then per part its header lines, an empty line and its data, each
part ended by ``\\r\\n--BOUNDARY`` and the last by ``\\r\\n--BOUNDARY--``. ``feed`` returns events in order:
``PartStarted(name, filename)`` once a part's headers are read, ``PartData(bytes)`` for its data as it arrives (all but
the last few bytes, which could begin the delimiter, are passed on at once), ``PartEnded()``; and ``close`` checks the
body reached its final delimiter. Malformed input raises ``FormError``. Only the header block of one part and a
delimiter's length of data are ever buffered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A part's header block (Content-Disposition, Content-Type) is a few hundred bytes; 16 KiB is generous.
MAX_PART_HEADERS = 16 * 1024

# A form with more parts than this is not one of ours.
MAX_PARTS = 64

_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)


class FormError(Exception):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class PartStarted:
    name: str
    filename: str | None


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnded:
    pass


Event = PartStarted | PartData | PartEnded


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart/form-data Content-Type, or ``FormError``."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise FormError("multipart/form-data without a boundary")
    return match.group(1)


class FormParser:
    def __init__(self, boundary: str) -> None:
        self._first = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\r\n" + self._first
        self._buffer = bytearray()
        self._state = "preamble"  # preamble, headers, data, after-delimiter, done
        self._parts = 0

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            before = (self._state, len(self._buffer))
            self._step(events)
            if (self._state, len(self._buffer)) == before:
                return events

    def close(self) -> None:
        if self._state != "done":
            raise FormError("the multipart body ended before its final boundary")

    def _step(self, events: list[Event]) -> None:
        if self._state == "preamble":
            index = self._buffer.find(self._first)
            if index < 0:
                if len(self._buffer) > MAX_PART_HEADERS:
                    raise FormError("no multipart boundary where the body begins")
                return
            del self._buffer[: index + len(self._first)]
            self._state = "after-delimiter"
        elif self._state == "after-delimiter":
            if len(self._buffer) < 2:
                return
            if self._buffer[:2] == b"--":
                self._state = "done"
                self._buffer.clear()
            elif self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
                self._state = "headers"
            else:
                raise FormError("a multipart boundary is followed by neither CRLF nor --")
        elif self._state == "headers":
            index = self._buffer.find(b"\r\n\r\n")
            if index < 0:
                if len(self._buffer) > MAX_PART_HEADERS:
                    raise FormError(f"a part's headers are over {MAX_PART_HEADERS} bytes")
                return
            events.append(self._part(bytes(self._buffer[:index]).decode("utf-8", "replace")))
            del self._buffer[: index + 4]
            self._state = "data"
        elif self._state == "data":
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                if index:
                    events.append(PartData(bytes(self._buffer[:index])))
                events.append(PartEnded())
                del self._buffer[: index + len(self._delimiter)]
                self._state = "after-delimiter"
                return
            keep = len(self._delimiter) - 1  # these could be the delimiter's beginning
            if len(self._buffer) > keep:
                events.append(PartData(bytes(self._buffer[:-keep])))
                del self._buffer[:-keep]
        elif self._buffer:
            self._buffer.clear()  # the epilogue after the final boundary is ignored

    def _part(self, headers: str) -> PartStarted:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise FormError(f"more than {MAX_PARTS} parts")
        for line in headers.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                field = _NAME.search(value)
                filename = _FILENAME.search(value)
                if field is None:
                    break
                return PartStarted(field.group(1), filename.group(1) if filename else None)
        raise FormError("a part has no Content-Disposition with a name")

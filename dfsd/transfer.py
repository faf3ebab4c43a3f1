"""A file's bytes on any hop: the one place that chooses between sending them inline and as a stream.

A file travels after a header: ``put`` or ``store`` (an upload, sent by the dialer) or ``sending`` (a download, the
listener's answer). Its bytes go inside the header when the header's length says there are at most INLINE_MAX of them
and there are (PROTOCOL.md 5.2, 6.2, 6.3); else as a stream of ``data`` frames closed by ``end``, and a file of unknown
length always streams, so a slow source (a pipe) starts at once. ``send_file`` makes that choice for the one who holds
the bytes (the client's source, a node's disk): it reads ahead up to INLINE_MAX bytes of a file that should be small.

A relay does not choose again. ``receive_file`` gives what arrived as a ``Body`` (the bytes, or the stream still to
come), and ``send_file`` passes a ``Body`` on in the form it arrived: the manager forwards a stream as a stream and
inline bytes inline, so what a node receives is what the client sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeAlias

from .protocol import INLINE_MAX
from .protocol.messages import Data, End, Ok, Put, Sending, Store, Stored
from .wire import Connection, receive_stream, send_stream, send_upload

Frames: TypeAlias = AsyncIterable[Data | End]
Header: TypeAlias = Put | Store | Sending


@dataclass(frozen=True, slots=True)
class Body:
    """A file's bytes: whole (``data``, with the SHA-256 that came with them, if any), or a stream of ``frames``
    (``data`` frames, then ``end``) still to be read."""

    data: bytes | None = None
    sha256: bytes | None = None
    frames: Frames | None = None

    def through(self, wrap: Callable[[Frames], Frames]) -> Body:
        """The same bytes, a stream read through ``wrap`` (a relay's checks on the way)."""
        return self if self.frames is None else dataclasses.replace(self, frames=wrap(self.frames))


async def send_file(conn: Connection, header: Header, source: Frames | Body) -> Stored | None:
    """Send ``header`` (without ``data``) and the file's bytes from ``source``: a stream of frames from the one who
    holds the bytes, or a ``Body`` to relay as it arrived. An upload returns the receiver's ``stored`` (or raises its
    error); a download returns None."""
    body = source if isinstance(source, Body) else await _choose(header, source)
    if body.frames is None:
        assert body.data is not None
        whole = dataclasses.replace(header, data=body.data, sha256=header.sha256 or body.sha256)
        await conn.send(whole)
        return None if isinstance(whole, Sending) else await conn.expect(Stored)
    if isinstance(header, Sending):
        await conn.send(header)
        await send_stream(conn, body.frames)
        return None
    return await send_upload(conn, header, body.frames)


def receive_file(conn: Connection, header: Header) -> Body:
    """The bytes of the file ``header`` announced, which just arrived on ``conn``: inside it, or as a stream. Reading
    a streamed upload's frames first tells the uploader to go ahead (``ok``): do whatever may refuse it before."""
    if header.data is not None:
        return Body(data=header.data, sha256=header.sha256)
    return Body(frames=_stream_of(conn, upload=not isinstance(header, Sending)))


async def _stream_of(conn: Connection, upload: bool) -> AsyncIterator[Data | End]:
    if upload:
        await conn.send(Ok())
    async for message in receive_stream(conn):
        yield message


async def _choose(header: Header, frames: Frames) -> Body:
    """Inline or a stream, for the one who holds the bytes: inline when the header's length is at most INLINE_MAX
    and the frames hold no more than that; the frames read ahead to tell are sent first otherwise."""
    length = header.length if isinstance(header, Sending) else header.size
    if length is None or length > INLINE_MAX:
        return Body(frames=frames)
    ahead = aiter(frames)
    head: list[Data] = []
    total = 0
    async for message in ahead:
        if type(message) is End:
            return Body(data=b"".join(frame.data for frame in head), sha256=message.sha256)
        assert type(message) is Data
        head.append(message)
        total += len(message.data)
        if total > INLINE_MAX:
            break
    return Body(frames=_chain(head, ahead))


async def _chain(head: list[Data], rest: AsyncIterator[Data | End]) -> AsyncIterator[Data | End]:
    for message in head:
        yield message
    async for message in rest:
        yield message

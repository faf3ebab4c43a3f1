"""A file's bytes on any hop: the one place that chooses between sending them inline and as a stream.

A file travels after a header: ``put`` or ``store`` (an upload, sent by the dialer) or ``sending`` (a download, the
listener's answer). Its bytes go inside the header when the header's length says there are at most INLINE_MAX of them
and there are (PROTOCOL.md 5.2, 6.2, 6.3); else as a stream of ``data`` frames closed by ``end``, and a file of unknown
length always streams, so a slow source (a pipe) starts at once. ``send_file`` makes that choice for the one who holds
the bytes (the client's source, a node's disk): it reads ahead up to INLINE_MAX bytes of a file that should be small.

The streams underneath follow the connection's conversation: it says when a stream is coming to us, when an uploader
told ``error`` early still owes its ``end``, and when a listener must skip the rest of one (``discard_stream``).

A relay does not choose again. ``receive_file`` gives what arrived as a ``Body`` (the bytes, or the stream still to
come), and ``send_file`` passes a ``Body`` on in the form it arrived: the manager forwards a stream as a stream and
inline bytes inline, so what a node receives is what the client sent.

(Measured and not kept: a relay that moves a download's data frames from the node's socket to the client's inside the
kernel (``splice`` through a pipe, each frame only once all of it was queued, so both sides stay at frame boundaries;
the frames' heads peeked, the conversations told of each frame), its ``end`` and anything else received and sent as
here. The manager's CPU per GiB fell from 0.45-0.48 s to 0.29-0.33 s, but the client's rose from 0.92-0.99 s to
1.07-1.14 s (system time: its receive copies out of the node's own socket pages, which the node's kernel cannot reuse
until the client has read them) and the node's stayed 0.28-0.33 s or rose to 0.47 s: the download's CPU in all was
unchanged (1.67-1.80 s against 1.69-1.90 s), and so was its rate, `dfs-cat` to a pipe in 6 pairs under load 4-6:
new/old 0.76-1.33, median 0.98; `dfs-cat -o` in 4 pairs: 0.87-1.32, median 1.11.)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeAlias

from .protocol import INLINE_MAX
from .protocol.messages import Data, End, Error, Message, Ok, Put, Sending, Store, Stored
from .wire import Connection, ConnectionLost, conversation_of

Frames: TypeAlias = AsyncIterable[Data | End]
Stream: TypeAlias = AsyncGenerator[Data | End, None]
Header: TypeAlias = Put | Store | Sending


@dataclass(frozen=True, slots=True)
class Body:
    """A file's bytes: whole (``data``, with the SHA-256 that came with them, if any), or a stream of ``frames``
    (``data`` frames, then ``end``) still to be read."""

    data: bytes | None = None
    sha256: bytes | None = None
    frames: Frames | None = None
    meta: dict[str, str] | None = None  # what the end of an upload read ahead added to its metadata (end.meta)

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
        if body.meta and isinstance(whole, Put):  # an upload sent whole carries its end's metadata in the put
            whole = dataclasses.replace(whole, meta={**(whole.meta or {}), **body.meta})
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


def travels_inline(length: int) -> bool:
    """Whether a file (or range) of ``length`` bytes goes inside its header rather than as a stream."""
    return length <= INLINE_MAX


async def _choose(header: Header, frames: Frames) -> Body:
    """Inline or a stream, for the one who holds the bytes: inline when the header's length is at most INLINE_MAX
    and the frames hold no more than that; the frames read ahead to tell are sent first otherwise."""
    length = header.length if isinstance(header, Sending) else header.size
    if length is None or not travels_inline(length):
        return Body(frames=frames)
    ahead = aiter(frames)
    head: list[Data] = []
    total = 0
    async for message in ahead:
        if type(message) is End:
            return Body(data=b"".join(frame.data for frame in head), sha256=message.sha256, meta=message.meta)
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


# --- streams of data frames -------------------------------------------------------------------------------------------
# A stream is a run of ``data`` frames closed by one ``end`` frame. Sources and sinks pass the frames themselves around,
# so a relay forwards the sender's ``end`` (with its checksum) without looking inside.


async def receive_stream(conn: Connection) -> Stream:
    """Yield the ``data`` frames of the stream coming to us, then its ``end``; an ``error`` frame that cuts a download
    short is raised (an uploader has no such frame: the conversation refuses it as a protocol error)."""
    while True:
        message = await conn.recv()
        if isinstance(message, Error):
            raise conn.error_of(message)
        assert isinstance(message, Data | End)  # the conversation lets nothing else through
        yield message
        if type(message) is End:
            return


async def discard_stream(conn: Connection) -> None:
    """Skip the rest of a stream the peer is still sending, so the connection can carry the next request."""
    conversation = conversation_of(conn)
    while conversation.streaming_in:
        await conn.recv()


async def send_stream(conn: Connection, stream: AsyncIterable[Data | End]) -> None:
    """Send every frame of ``stream``, which must finish with ``end``."""
    async for message in stream:
        await conn.send(message)
        if type(message) is End:
            return
    raise ConnectionLost("the stream being sent ended without its end frame")


async def send_upload(conn: Connection, request: Put | Store, stream: AsyncIterable[Data | End]) -> Stored:
    """Send ``request``, wait for ``ok``, send ``stream``, and return the final answer (``stored``).

    The answer is watched for while the stream goes out: a receiver that fails early (disk full, a wrong size) answers
    at once, and the rest of the file is not sent for nothing. A request naming its size and SHA-256 may be answered
    ``stored`` in place of ``ok`` (the name already holds exactly those bytes): then nothing is sent. Until our ``end``
    is out the answer is not due, so that watch has no timer: a receiver is never cut off for being silent while we are
    still sending. Both tasks are owned here: whatever happens, each is finished and its outcome retrieved before this
    returns.
    """
    conversation = conversation_of(conn)
    await conn.send(request)
    accepted = await conn.recv()
    if isinstance(accepted, Error):
        raise conn.error_of(accepted)
    if isinstance(accepted, Stored):  # in place of ok: the conversation checked it repeats the request's size and hash
        return accepted
    sender = asyncio.ensure_future(send_stream(conn, stream))
    early = asyncio.ensure_future(conn.recv())
    try:
        await asyncio.wait((sender, early), return_when=asyncio.FIRST_COMPLETED)
        if not sender.done():
            # The receiver answered early: stop, and close the stream (once) so the connection stays in step.
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            message = early.result()  # raises the connection's error, if that is what ended the watch
            if conversation.streaming_out:
                await conn.send(End())
        else:
            sender.result()  # raises the source's or the connection's error, if any
            message = await _answer_now_due(conn, early)
    finally:
        for task in (sender, early):
            task.cancel()
        await asyncio.gather(sender, early, return_exceptions=True)  # retrieves every outcome, errors included
    if isinstance(message, Error):
        raise conn.error_of(message)
    assert isinstance(message, Stored)  # the conversation lets nothing else through
    return message


async def _answer_now_due(conn: Connection, early: asyncio.Future[Message]) -> Message:
    """The answer to a stream whose ``end`` is out: the early watch's if it has one, else one received under the
    connection's timer, now that it is owed (cancelling a receive loses nothing: unread bytes stay buffered)."""
    if early.done():
        return early.result()
    early.cancel()
    await asyncio.gather(early, return_exceptions=True)
    return await conn.recv()

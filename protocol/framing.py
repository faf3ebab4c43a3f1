"""Frames: a 4-byte big-endian length, then exactly that many bytes holding one CBOR item.

Theory of operation: ``FrameDecoder`` takes whatever bytes arrived, written into the buffer it offers
(``get_buffer``/``buffer_updated``) or copied in (``receive_data``), and hands out complete messages (``next_message``),
so it neither knows nor cares how the bytes were split on the way. A length prefix over the limit is
refused as soon as its four bytes are in, before the frame is buffered. After a ``ProtocolError`` the decoder stays
broken: the connection must be closed, because framing has been lost.

``data`` frames are the bulk of all traffic, so both directions take a short path for them that produces exactly the
bytes the general CBOR path would: encoding writes the fixed map prefix and the byte-string head by hand in front of
the payload (no copy of the payload), and decoding recognises that prefix and returns the payload as a memoryview.
"""

from __future__ import annotations

import collections
import io
import struct

import cbor2

from .errors import ProtocolError
from .limits import CHUNK_SIZE, MAX_FRAME_SIZE
from .messages import Buffer, Data, Message, message_from_wire, message_to_wire

_LENGTH = struct.Struct(">I")

# The receive buffers (``FrameDecoder``) come in three sizes, the smallest that holds the frames a connection carries:
# FIRST_BUFFER for requests and answers of a few KiB (a new connection's, so an idle or hostile one costs little),
# INLINE_BUFFER once a frame carries a file inline (up to INLINE_MAX), and STREAM_BUFFER while a stream of data frames
# runs: room for two of CHUNK_SIZE and a read-ahead (little to spare: a payload kept pins its whole buffer).
FIRST_BUFFER = 16 * 1024
INLINE_BUFFER = 128 * 1024
STREAM_BUFFER = 2 * CHUNK_SIZE + 128 * 1024

# Stream buffers a connection keeps to reuse once no payload of theirs is out: a fresh one costs a page fault per 4 KiB
# (measured: more than the socket's own copy of the bytes), a reused one nothing. Enough for what receivers hold at once
# (a disk thread's two 4 MiB batches pin four) and one more.
SPARE_BUFFERS = 6

# A frame that fills its buffer before it is whole moves to one at most GROWTH times the bytes of it that arrived: a
# peer that announces a large frame gets a large buffer only by sending a good part of it.
GROWTH = 16

# While the next frame's length is unknown, at most this many bytes are asked of the transport: a batch of small
# frames in one system call, and the start of a data frame, which then fits in the same buffer (ROOM).
READ_AHEAD = 64 * 1024

# While a stream runs, a buffer takes a next frame only with this much room left: a read-ahead and a data frame after
# it, so a data frame never has to move to a fresh buffer.
ROOM = READ_AHEAD + CHUNK_SIZE + 64

# cbor2's own encoding of {"type": "data", "data": b""} less the final 0x40 (the empty byte string's head).
_DATA_PREFIX = cbor2.dumps({"type": "data", "data": b""})[:-1]


def _bytes_head(size: int) -> bytes:
    """The shortest CBOR head of a byte string of ``size`` bytes (RFC 8949 section 4.2.1)."""
    if size < 24:
        return bytes([0x40 | size])
    if size < 0x100:
        return b"\x58" + size.to_bytes(1, "big")
    if size < 0x10000:
        return b"\x59" + size.to_bytes(2, "big")
    return b"\x5a" + size.to_bytes(4, "big")


def encode_parts(message: Message) -> list[Buffer]:
    """The frame for ``message`` as buffers to be written in order (a data payload is not copied)."""
    if type(message) is Data:
        head = _DATA_PREFIX + _bytes_head(len(message.data))
        return [_LENGTH.pack(len(head) + len(message.data)) + head, message.data]
    body = cbor2.dumps(message_to_wire(message))
    return [_LENGTH.pack(len(body)) + body]


def encode(message: Message) -> bytes:
    """The frame for ``message`` as one bytes object."""
    return b"".join(encode_parts(message))


def decode_body(body: bytes | memoryview) -> Message:
    """The message in one frame's body (the bytes after the length prefix)."""
    fast = _decode_data(body)
    if fast is not None:
        return fast
    stream = io.BytesIO(body)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORError, RecursionError, MemoryError, OverflowError, ValueError) as err:
        raise ProtocolError(f"protocol error: a frame is not valid CBOR ({err})") from err
    if stream.tell() != len(body):
        raise ProtocolError(f"protocol error: {len(body) - stream.tell()} stray bytes after the CBOR item in a frame")
    return message_from_wire(item)


def _decode_data(body: bytes | memoryview) -> Data | None:
    """The data frame in ``body`` if it is encoded exactly as ``encode_parts`` would, else None."""
    start = len(_DATA_PREFIX)
    if body[:start] != _DATA_PREFIX:
        return None
    for head_length in (1, 2, 3, 5):  # heads with 0, 1, 2 and 4 length bytes
        payload_size = len(body) - start - head_length
        if payload_size >= 0 and body[start : start + head_length] == _bytes_head(payload_size):
            return Data(memoryview(body)[start + head_length :])
    return None


class FrameDecoder:
    """Turns a byte stream into messages. Sans-I/O: it owns the buffers the bytes arrive in, and hands out messages.

    The I/O layer asks where the next bytes go (``get_buffer``), has them written there (a socket's ``recv_into``),
    and says how many came (``buffer_updated``), as ``asyncio.BufferedProtocol`` does; ``receive_data`` copies bytes
    in through the same two calls. So a frame lies in one buffer as it arrived and is never joined from pieces: its
    body is decoded where it lies, and a data payload is handed out as a view of it, not a copy.

    Buffer lifetime: a data payload handed out stays the receiver's for as long as it keeps it (a disk thread's batch,
    a transport's write queue), so a buffer that lent one is written again only once no view of it lives: it is left
    behind when full, kept (SPARE_BUFFERS) and reused from its start when ``unshared`` says so, or freed by the last
    view once its stream ends. A buffer that lent nothing is reused from its
    start. A frame that fills what is left of its buffer before it is whole moves to a larger one (GROWTH): a copy of
    the bytes of it that arrived so far. Offers keep that rare: while the next frame's length is unknown at most
    READ_AHEAD bytes are offered, once known at most the rest of that frame, and while a stream runs a buffer with less
    than ROOM left takes no next frame, so a stream's data frames are never copied.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._max_frame_size = max_frame_size
        self._standing = FIRST_BUFFER  # the size of the next fresh buffer, for the frames the connection carries
        self._buffer = bytearray(0)  # allocated at the first get_buffer: an idle connection holds nothing
        self._view = memoryview(self._buffer).toreadonly()  # what frames are cut from (a payload is read-only)
        self._lent = False  # a data payload was handed out of this buffer: its bytes are never written again
        self._spares: list[bytearray] = []  # stream buffers left behind, to reuse once no view of them lives
        self._frames: collections.deque[memoryview] = collections.deque()  # bodies of whole frames not handed out
        self._framed = 0  # their bytes, length prefixes included
        self._tail = 0  # where the frame still arriving starts in the buffer
        self._tail_length: int | None = None  # its body's announced length, once its prefix is in
        self._last_small = True  # the last whole frame fits INLINE_BUFFER: no stream runs (or it just ended)
        self._end = 0  # where the next bytes go
        self._error: ProtocolError | None = None
        self.moved = 0  # bytes copied to a fresh buffer because their frame did not fit (the decoder's only copy)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as messages."""
        return self._framed + self._end - self._tail

    def get_buffer(self) -> memoryview:
        """Where the next bytes go (at least one byte of room): fill a prefix of it, then call ``buffer_updated``."""
        self._raise_if_broken()
        if self._end == self._tail:  # between frames: nothing to carry over
            if not self._frames and (not self._lent or self._last_small):
                self._start_over()
            elif len(self._buffer) - self._end < (ROOM if self._standing == STREAM_BUFFER else 1):
                self._replace(self._standing)
        elif self._end == len(self._buffer):  # the frame arriving fills the buffer: it moves to a larger one
            self._replace(self._grown())
        stop = self._end + READ_AHEAD if self._tail_length is None else self._tail + _LENGTH.size + self._tail_length
        return memoryview(self._buffer)[self._end : min(stop, len(self._buffer))]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were written at the start of the last ``get_buffer``; raises ``ProtocolError`` at once if
        a frame's announced length is over the limit and no whole frame waits before it (else ``broken`` says so)."""
        self._raise_if_broken()
        self._end += nbytes
        self._cut_frames()

    def receive_data(self, data: Buffer) -> None:
        """Copy in bytes that arrived elsewhere; raises ``ProtocolError`` at once if a frame's announced length is
        over the limit."""
        self._raise_if_broken()
        view = memoryview(data).cast("B")
        while view and self._error is None:
            room = self.get_buffer()
            size = min(len(room), len(view))
            room[:size] = view[:size]
            self.buffer_updated(size)
            view = view[size:]

    @property
    def broken(self) -> bool:
        """Framing is lost (a ``ProtocolError`` was raised, or is due once the frames before it are handed out): the
        connection must be closed, and no more bytes taken."""
        return self._error is not None

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive. Frames that were whole before an oversized
        length prefix are handed out before it is refused."""
        if not self._frames:  # the usual answer while waiting for a peer
            self._raise_if_broken()
            return None
        body = self._frames.popleft()
        self._framed -= _LENGTH.size + len(body)
        try:
            message = decode_body(body)
        except ProtocolError as err:
            self._error = err
            self._frames.clear()  # none of them can be trusted now
            self._framed = 0
            raise
        if type(message) is Data and body.obj is self._buffer:
            self._lent = True
        return message

    def _cut_frames(self) -> None:
        """Queue every frame now whole; note the announced length of the one still arriving, refusing it at once if
        it is over the limit."""
        while self._end - self._tail >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer, self._tail)
            if length > self._max_frame_size:
                self._error = ProtocolError(
                    f"protocol error: a frame announces {length} bytes; the limit is {self._max_frame_size}"
                )
                if self._frames:
                    return  # raised by next_message once they are out
                raise self._error
            body_start = self._tail + _LENGTH.size
            if self._end < body_start + length:
                self._tail_length = int(length)
                return
            self._frames.append(self._view[body_start : body_start + length])
            self._framed += _LENGTH.size + length
            self._grow_standing(_LENGTH.size + length)
            self._tail = body_start + length
        self._tail_length = None

    def _grow_standing(self, frame: int) -> None:
        """A whole frame of ``frame`` bytes arrived: later buffers are large enough for frames like it."""
        self._last_small = frame <= INLINE_BUFFER
        if not self._last_small:
            self._standing = STREAM_BUFFER
        elif frame > FIRST_BUFFER:
            self._standing = max(self._standing, INLINE_BUFFER)

    def _grown(self) -> int:
        """The size of the buffer the frame filling this one moves to (GROWTH)."""
        arrived = self._end - self._tail
        whole = arrived + 1 if self._tail_length is None else _LENGTH.size + self._tail_length
        return max(self._standing, min(whole, GROWTH * arrived))

    def _start_over(self) -> None:
        """Nothing in the buffer is needed any more: write from its start again. If a payload of it may still be out,
        or it is not the size the connection needs now (the stream it served has ended), go on in a fresh one."""
        if self._standing == STREAM_BUFFER and self._end:
            self._standing = INLINE_BUFFER
            self._spares.clear()
        if self._lent or len(self._buffer) != self._standing:
            self._replace(self._standing)
        self._tail = self._end = 0

    def _replace(self, size: int) -> None:
        """Go on in a fresh buffer of ``size`` bytes, the part of a frame that arrived so far moved to its start."""
        arrived = self._view[self._tail : self._end]
        fresh = self._spare(size) or bytearray(max(size, len(arrived) + 1))
        fresh[: len(arrived)] = arrived
        self.moved += len(arrived)
        if len(self._buffer) == STREAM_BUFFER:
            self._spares.append(self._buffer)
            if len(self._spares) > SPARE_BUFFERS:
                del self._spares[0]
        self._buffer, self._view, self._lent = fresh, memoryview(fresh).toreadonly(), False
        self._tail, self._end = 0, len(arrived)

    def _spare(self, size: int) -> bytearray | None:
        """A kept stream buffer no payload of which is out any more, the longest kept first; None if there is none
        (or ``size`` is not a stream buffer's)."""
        if size == STREAM_BUFFER:
            for index, spare in enumerate(self._spares):
                if unshared(spare):
                    del self._spares[index]
                    return spare
        return None

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error


def unshared(buffer: bytearray) -> bool:
    """No view of ``buffer`` lives, so it may be written again: a bytearray refuses to change size while one does
    (BufferError), and ``del`` checks that before it touches a byte. The last byte goes back; no memory moves."""
    last = buffer[-1]
    try:
        del buffer[-1]
    except BufferError:
        return False
    buffer.append(last)
    return True

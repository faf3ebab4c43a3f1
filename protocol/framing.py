"""Frames: a 4-byte big-endian length, then exactly that many bytes holding one CBOR item.

Theory of operation: ``FrameDecoder`` is fed whatever bytes arrived (``receive_data``) and hands out complete messages
(``next_message``), so it neither knows nor cares how the bytes were split on the way. A length prefix over the limit is
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
from .limits import MAX_FRAME_SIZE
from .messages import Buffer, Data, Message, message_from_wire, message_to_wire

_LENGTH = struct.Struct(">I")

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
    """Turns a byte stream into messages. Sans-I/O: feed it bytes, pull messages.

    Arrived bytes are kept as the immutable chunks they came in, not copied into one buffer: a frame that lies inside
    one chunk is handed out as a view of it (a data payload is never copied), and one that spans chunks is joined
    once. That keeps the decoder at memory speed for 1 MiB data frames.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._max_frame_size = max_frame_size
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as messages."""
        return self._buffered

    def receive_data(self, data: Buffer) -> None:
        """Add bytes that arrived; raises ``ProtocolError`` at once if a frame's announced length is over the limit."""
        self._raise_if_broken()
        if data:
            # bytes are immutable and can be kept as they are; anything else the caller may reuse, so copy it.
            self._chunks.append(memoryview(data if isinstance(data, bytes) else bytes(data)))
            self._buffered += len(data)
        self._check_length()

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive."""
        self._raise_if_broken()
        if not self._buffered:  # the usual answer while waiting for a peer
            return None
        length = self._check_length()
        if length is None or self._buffered < _LENGTH.size + length:
            return None
        body = memoryview(self._take(_LENGTH.size + length))[_LENGTH.size :]  # the prefix and body in one take
        try:
            message = decode_body(body)
        except ProtocolError as err:
            self._error = err
            raise
        return message

    def _check_length(self) -> int | None:
        """The announced length of the next frame, once its prefix is in; refuses it at once if over the limit."""
        if self._buffered < _LENGTH.size:
            return None
        first = self._chunks[0]
        prefix = first[: _LENGTH.size] if len(first) >= _LENGTH.size else self._peek(_LENGTH.size)
        (length,) = _LENGTH.unpack(prefix)
        if length > self._max_frame_size:
            self._error = ProtocolError(
                f"protocol error: a frame announces {length} bytes; the limit is {self._max_frame_size}"
            )
            raise self._error
        return int(length)

    def _peek(self, size: int) -> bytes:
        parts, needed = [], size
        for chunk in self._chunks:
            parts.append(chunk[:needed])
            needed -= len(parts[-1])
            if not needed:
                break
        return b"".join(parts)

    def _take(self, size: int) -> bytes | memoryview:
        """Remove and return the next ``size`` bytes: a view if they lie in one chunk, else one joined copy."""
        if not size:
            return b""
        self._buffered -= size
        first = self._chunks[0]
        if len(first) >= size:
            taken = first[:size]
            if len(first) == size:
                self._chunks.popleft()
            else:
                self._chunks[0] = first[size:]
            return taken
        parts = []
        while size:
            chunk = self._chunks.popleft()
            if len(chunk) > size:
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

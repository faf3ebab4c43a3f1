"""The decoder's own receive buffers: what ``get_buffer`` offers, what a data payload points into, and for how long.

A transport writes straight into the buffer ``get_buffer`` offers and reports how much it wrote (``buffer_updated``),
as ``asyncio.BufferedProtocol`` does. Invariants: every message comes out as it went in, however the bytes were split;
a data payload handed out never changes afterwards, whatever arrives later (the receiver may hold it in a disk batch
or a transport's queue); a stream of data frames is received with no copy at all; a connection carrying small frames
keeps reusing one small buffer. No sockets: the tests play the transport.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from comparable import normalise
from dfsd.protocol import CHUNK_SIZE, MAX_FRAME_SIZE, FrameDecoder, Message, encode
from dfsd.protocol.framing import FIRST_BUFFER, GROWTH, INLINE_BUFFER, SPARE_BUFFERS, STREAM_BUFFER
from dfsd.protocol.messages import Data, End, Get, Ok, Sending
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BIG = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def payload(index: int, size: int) -> bytes:
    return bytes([index % 251]) * size


def fill(decoder: FrameDecoder, stream: bytes, sizes: Iterator[int]) -> Iterator[Message]:
    """Play a transport: write ``stream`` into the offered buffers, each time as many bytes as the next of ``sizes``
    (at most what is offered and what is left), and yield every message as soon as it is whole."""
    sent = 0
    while sent < len(stream):
        room = decoder.get_buffer()
        assert len(room) > 0, "get_buffer offered no room"
        size = min(len(room), len(stream) - sent, max(1, next(sizes)))
        room[:size] = stream[sent : sent + size]
        del room  # a transport lets go of the buffer before it reports
        decoder.buffer_updated(size)
        sent += size
        while (message := decoder.next_message()) is not None:
            yield message


def greedy() -> Iterator[int]:
    """A fast sender: the socket always has more than is asked for."""
    while True:
        yield 1 << 40


@given(
    sizes=st.lists(st.integers(0, 3 * CHUNK_SIZE // 2), min_size=1, max_size=10),
    small_between=st.lists(st.booleans(), min_size=10, max_size=10),
    kept=st.lists(st.booleans(), min_size=21, max_size=21),
    reads=st.lists(st.integers(1, 2 * CHUNK_SIZE), min_size=1, max_size=20),
)
@BIG
def test_payloads_kept_never_change_whatever_arrives_later(
    sizes: list[int], small_between: list[bool], kept: list[bool], reads: list[int]
) -> None:
    """Some payloads are dropped at once (their buffers may be reused), others kept to the end (a disk batch)."""
    messages: list[Message] = []
    for index, size in enumerate(sizes):
        messages.append(Data(payload(index, size)))
        if small_between[index]:
            messages.append(Sending(size=index, offset=0, length=index))
    messages.append(End())
    decoder = FrameDecoder()
    received = fill(decoder, b"".join(encode(message) for message in messages), itertools.cycle(reads))
    held = [(index, message) for index, message in enumerate(received) if kept[index]]
    assert [normalise(message) for _, message in held] == [normalise(messages[index]) for index, _ in held]
    assert decoder.buffered == 0


def test_a_long_stream_reuses_a_few_buffers() -> None:
    """Payloads are let go of a few frames later (as a transport's queue does): their buffers come back."""
    stream = b"".join(encode(Data(payload(i, CHUNK_SIZE))) for i in range(64)) + encode(End())
    decoder = FrameDecoder()
    offered: list[bytearray] = []  # the buffers themselves (not views: those would pin them)
    window: list[Message] = []
    sent = 0
    while sent < len(stream):
        room = decoder.get_buffer()
        offered.append(room.obj)  # type: ignore[arg-type]
        size = min(len(room), len(stream) - sent)
        room[:size] = stream[sent : sent + size]
        del room
        decoder.buffer_updated(size)
        sent += size
        while (message := decoder.next_message()) is not None:
            window = [*window[-3:], message]
    assert len({id(buffer) for buffer in offered if len(buffer) == STREAM_BUFFER}) <= SPARE_BUFFERS


def test_a_stream_of_data_frames_is_received_without_a_copy() -> None:
    stream = encode(Get(name="f")) + b"".join(encode(Data(payload(i, CHUNK_SIZE))) for i in range(12))
    decoder = FrameDecoder()
    received = [message for message in fill(decoder, stream + encode(End()), greedy()) if type(message) is Data]
    assert [bytes(message.data) == payload(i, CHUNK_SIZE) for i, message in enumerate(received)] == [True] * 12
    assert decoder.moved <= FIRST_BUFFER + GROWTH * FIRST_BUFFER  # the start of the first data frame only
    assert all(isinstance(message.data, memoryview) and isinstance(message.data.obj, bytearray) for message in received)
    assert all(message.data.readonly for message in received)
    assert all(len(message.data.obj) == STREAM_BUFFER for message in received[1:])


def test_a_stream_read_in_odd_pieces_moves_little() -> None:
    stream = b"".join(encode(Data(payload(i, CHUNK_SIZE))) for i in range(16)) + encode(End())
    decoder = FrameDecoder()
    list(fill(decoder, stream, itertools.cycle([4093, 65521, 131071, 300007])))
    assert decoder.moved <= FIRST_BUFFER + GROWTH * FIRST_BUFFER


def test_small_frames_reuse_one_small_buffer() -> None:
    decoder = FrameDecoder()
    buffers = set()
    for index in range(1000):
        room = decoder.get_buffer()
        buffers.add(id(room.obj))
        frame = encode(Sending(size=1024, offset=0, length=1024, data=payload(index, 1024)))
        room[: len(frame)] = frame
        decoder.buffer_updated(len(frame))
        assert decoder.next_message() == Sending(size=1024, offset=0, length=1024, data=payload(index, 1024))
    assert len(buffers) == 1
    assert len(decoder.get_buffer().obj) == FIRST_BUFFER


def test_a_buffer_goes_back_to_inline_size_once_a_stream_has_ended() -> None:
    decoder = FrameDecoder()
    stream = b"".join(encode(Data(payload(i, CHUNK_SIZE))) for i in range(3)) + encode(End()) + encode(Ok())
    assert len(list(fill(decoder, stream, greedy()))) == 5
    room = decoder.get_buffer()
    frame = encode(Ok())
    room[: len(frame)] = frame
    decoder.buffer_updated(len(frame))
    assert decoder.next_message() == Ok()
    assert len(decoder.get_buffer().obj) == INLINE_BUFFER


def test_an_idle_decoder_holds_no_buffer() -> None:
    assert FrameDecoder()._buffer == bytearray()


def test_a_peer_announcing_a_large_frame_gets_a_large_buffer_only_by_sending_it() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(MAX_FRAME_SIZE.to_bytes(4, "big") + b"x")
    assert len(decoder.get_buffer().obj) == FIRST_BUFFER
    decoder.receive_data(bytes(FIRST_BUFFER - 5))
    assert len(decoder.get_buffer().obj) == GROWTH * FIRST_BUFFER

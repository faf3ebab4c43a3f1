"""The receive path of ``Connection`` (dfsd/wire.py) on a real loopback socket, both ends in one process: data payloads
arrive as views of the buffers the socket filled and stay intact however long they are kept, and a receiver that
stops reading makes the sender wait instead of filling its own memory."""

from __future__ import annotations

import asyncio

from dfsd.protocol import CHUNK_SIZE
from dfsd.protocol.messages import Data, End, Message, Ok, Put, Stored
from serving import serving

from dfsd.service import Request
from dfsd.wire import READ_PAUSE, Connection

FRAMES = 24  # data frames of CHUNK_SIZE: several receive buffers' worth

# More than the kernels' socket buffers (4 MiB each way, doubled by Linux) and the sender's transport can hold.
MANY_FRAMES = 40


def payload(index: int) -> bytes:
    return bytes([index % 251]) * CHUNK_SIZE


async def upload(conn: Connection, frames: int = FRAMES) -> Stored:
    await conn.send(Put("a"))
    assert await conn.recv() == Ok()
    for index in range(frames):
        await conn.send(Data(payload(index)))
    await conn.send(End())
    return await conn.expect(Stored)


async def test_payloads_are_views_of_the_receive_buffers_and_stay_intact_while_kept() -> None:
    kept: list[Message] = []

    async def keep_everything(conn: Connection, request: Put, req: Request) -> None:
        await conn.send(Ok())
        while not isinstance(message := await conn.recv(), End):
            kept.append(message)
        await conn.send(Stored(FRAMES * CHUNK_SIZE, bytes(32)))

    async with serving({Put: keep_everything}) as conn:
        await upload(conn)
    assert all(type(message) is Data and isinstance(message.data, memoryview) for message in kept)
    assert all(isinstance(message.data.obj, bytearray) for message in kept if isinstance(message, Data))
    assert b"".join(message.data for message in kept if isinstance(message, Data)) == b"".join(
        payload(index) for index in range(FRAMES)
    )


async def test_a_receiver_that_stops_reading_holds_the_sender_back() -> None:
    go_on = asyncio.Event()
    receiver: list[Connection] = []

    async def slow(conn: Connection, request: Put, req: Request) -> None:
        receiver.append(conn)
        await conn.send(Ok())
        await go_on.wait()
        total = 0
        while not isinstance(message := await conn.recv(), End):
            assert isinstance(message, Data) and message.data == payload(total // CHUNK_SIZE)
            total += len(message.data)
        await conn.send(Stored(total, bytes(32)))

    async with serving({Put: slow}) as conn:
        sending = asyncio.ensure_future(upload(conn, MANY_FRAMES))
        for _ in range(1000):  # up to 10 s for the receiver to stop reading and the sender's transport to fill
            if receiver and not receiver[0]._link.reading and conn._link.writable is not None:
                break
            await asyncio.sleep(0.01)
        assert receiver and not receiver[0]._link.reading, "the receiver never stopped reading"
        assert conn._link.writable is not None, "the sender never had to wait"
        assert not sending.done()
        # The receiver stopped once READ_PAUSE bytes waited, after at most one more read (the rest of a frame).
        assert receiver[0]._decoder.buffered < READ_PAUSE + CHUNK_SIZE + 64
        go_on.set()
        stored = await asyncio.wait_for(sending, 30)
    assert stored.size == MANY_FRAMES * CHUNK_SIZE

"""The request loop (dfsd/service.py) on a real loopback socket, server and client in one process: what each
connection's conversation decides for it, with handlers written for the test."""

from __future__ import annotations

import pytest
from dfsd.protocol import BadRequest, ProtocolError
from dfsd.protocol.messages import Data, End, Error, FileInfo, Info, Ok, Put, Stat
from serving import serving
from structlog.testing import capture_logs

from dfsd.service import Request
from dfsd.wire import Connection, ConnectionLost

INFO = Info(FileInfo("a", 1, bytes(32), 100, 0.0, True))


async def test_a_frame_we_may_not_send_is_logged_as_our_bug_and_drops_the_peer() -> None:
    """A handler that answers twice breaks the order of frames itself: the second answer never leaves (the peer
    would take it for the answer to its next request); the bug is logged and the connection dropped."""

    async def answer_twice(conn: Connection, request: Stat, req: Request) -> None:
        await conn.send(INFO)
        await conn.send(INFO)

    with capture_logs() as logs:
        async with serving({Stat: answer_twice}) as conn:
            await conn.send(Stat("a"))
            assert await conn.recv() == INFO
            with pytest.raises(ConnectionLost):
                await conn.recv()
    (internal,) = [entry for entry in logs if entry["event"] == "internal_error"]
    assert internal["op"] == "stat"
    (request,) = [entry for entry in logs if entry["event"] == "request"]
    assert request["outcome"] == "error 10"
    assert not [entry for entry in logs if entry["event"] in ("connection_failed", "stray_error")]


async def test_after_an_early_answer_the_rest_of_the_upload_is_skipped_and_the_next_request_served() -> None:
    """The listener answers an upload with an error after its first data frame; the uploader, not watching, sends
    the rest and its end: all of it is read and dropped, and the frame after the end is taken as the next request."""

    async def refuse_early(conn: Connection, request: Put, req: Request) -> None:
        await conn.send(Ok())
        assert isinstance(await conn.recv(), Data)
        raise BadRequest("bad request: too many bytes")

    async def stat(conn: Connection, request: Stat, req: Request) -> None:
        await conn.send(INFO)

    async with serving({Put: refuse_early, Stat: stat}) as conn:
        await conn.send(Put("a"))
        assert await conn.recv() == Ok()
        for _ in range(5):
            await conn.send(Data(b"x" * 1000))
        await conn.send(End())
        answer = await conn.recv()
        assert isinstance(answer, Error) and answer.code == BadRequest.code
        await conn.send(Stat("a"))
        assert await conn.recv() == INFO


async def test_a_frame_that_is_not_a_request_of_the_peers_role_is_refused_with_error_6() -> None:
    async with serving({Stat: lambda conn, request, req: conn.send(INFO)}) as conn:
        conn.conversation = None  # send what an honest client's conversation would refuse to
        await conn.send(End())
        answer = await conn.recv()
        assert isinstance(answer, Error) and answer.code == ProtocolError.code
        assert "end is not a request this server takes" in answer.message

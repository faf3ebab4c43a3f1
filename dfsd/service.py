"""Serving one connection's requests, one at a time: shared by the manager's client port and a node's data port.

Each request goes to its ``handle_<message>`` coroutine with a ``Request`` whose ``fields`` make the request's log line
(name, size, node...). A failed request answers the peer with its error code and the connection carries on: if the
peer was still sending a stream (``Request.receiving``), the rest of it is read and dropped first, so the next frame is
the next request. Garbage from the peer (``ProtocolError``) is answered and then ends the connection, because framing
cannot be trusted any more. Either way the process and every other connection go on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .protocol import DfsError, InternalError, ProtocolError
from .protocol.messages import Message
from .wire import Connection, ConnectionLost, discard_stream


@dataclass(slots=True)
class Request:
    fields: dict[str, Any] = field(default_factory=dict)  # for the request's log line
    receiving: bool = False  # the peer is sending a stream that has not been read to its end


Handler = Callable[[Connection, Any, Request], Awaitable[None]]


async def serve_requests(
    conn: Connection, handlers: dict[type[Message], Handler], log: structlog.typing.FilteringBoundLogger
) -> None:
    """Answer requests on ``conn`` until the peer leaves or breaks the protocol; always closes ``conn``."""
    try:
        while True:
            request = await conn.recv()
            handler = handlers.get(type(request))
            if handler is None:
                raise ProtocolError(f"protocol error: {request.TYPE} is not a request this server takes")
            await _handle(conn, handler, request, log)
    except ConnectionLost:
        pass
    except ProtocolError as err:
        log.warning("protocol_error", peer=conn.peer, error=err.message)
        await conn.send_error(err)
    finally:
        await conn.close()


async def _handle(conn: Connection, handler: Handler, request: Message, log: Any) -> None:
    state = Request()
    started = time.perf_counter()
    outcome = "ok"
    try:
        await handler(conn, request, state)
    except ProtocolError:
        outcome = "protocol_error"
        raise
    except ConnectionLost:
        outcome = "peer_gone"
        raise
    except DfsError as err:
        outcome = f"error {int(err.code)}"
        state.fields["error"] = err.message
        await conn.send_error(err)
        if state.receiving:
            await discard_stream(conn)
    except Exception as err:
        outcome = f"error {int(InternalError.code)}"
        log.exception("internal_error", op=request.TYPE)
        await conn.send_error(InternalError(f"internal error: {type(err).__name__}; see the server's log"))
        raise ConnectionLost("internal error") from err
    finally:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info("request", op=request.TYPE, peer=conn.peer, duration_ms=duration_ms, outcome=outcome, **state.fields)

"""A listener and a client connected to it, in the test's own process: what the loopback tests share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import structlog
from dfsd.protocol.messages import Message

from dfsd.service import Handler, Listener, serve_requests
from dfsd.settings import Limits, Security
from dfsd.wire import Connection


@contextlib.asynccontextmanager
async def serving(handlers: Mapping[type[Message], Handler]) -> AsyncIterator[Connection]:
    """A listener taking clients with ``handlers``, and a client connected to it."""
    listener: Listener
    sessions = {"client": lambda conn: serve_requests(conn, handlers, listener)}
    listener = Listener(sessions, structlog.get_logger("test"), Security(), Limits())  # type: ignore[arg-type]
    port = await listener.start("127.0.0.1", 0)
    conn = await Connection.open("127.0.0.1", port, role="client")
    try:
        yield conn
    finally:
        conn.abort()
        await listener.shutdown(0)

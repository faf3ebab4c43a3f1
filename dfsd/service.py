"""Serving connections: the handshake, then one request at a time. Shared by the manager's port and a node's data port.

A new connection must open with ``hello``; its role picks the session that serves it (the manager takes clients and
nodes, a node takes the manager and its peers). A wrong version or role is refused with an error frame. With a shared
secret, the server proves it knows the secret in its ``welcome`` and the peer must answer with ``auth`` before anything
else; a peer that cannot is refused with error 9 (``protocol/handshake.py``). Past ``Limits.max_connections`` open
connections, new ones are refused with error 1. A peer gets ``Limits.request_timeout`` seconds for each thing it owes:
the next byte of the handshake, of a frame it has begun or of a request under way, or taking some of the bytes of our
answer; and ``Limits.idle_timeout`` between requests, counted once it has taken our last answer (PROTOCOL.md 9.5).
A session whose peer sets the pace of a request for someone else (a node's manager, relaying for a client) runs its
requests untimed; the peer's liveness is watched elsewhere.

After the handshake the connection's ``Conversation`` (``protocol/exchanges.py``) keeps the order of frames: it refuses
a frame that is not a request of the peer's role, and says whose turn it is, which picks the timer. Each request goes to
its ``handle_<message>`` coroutine with a ``Request`` whose ``fields`` make the request's log line (name, size,
node...). A failed request answers the peer with its error code and the connection carries on: if the peer was still
sending a stream (the conversation is ``skipping``), the rest of it is read and dropped first, so the next frame is the
next request. Garbage from the peer (``ProtocolError``) is answered and then ends the connection, because framing
cannot be trusted any more; a frame we were about to send out of order (``LocalProtocolError``) is our own bug, logged
as an internal error, and ends the connection too. Either way the process and every other connection go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from . import metrics
from .logs import RequestLines
from .protocol import DfsError, FrameDecoder, InternalError, ProtocolError, ServersUnavailable
from .protocol.errors import LocalProtocolError
from .protocol.exchanges import Conversation, Side
from .protocol.handshake import NONCE_BYTES, ListenerHandshake
from .protocol.messages import Message
from .settings import SECRET_HINT, Limits, Security
from .transfer import discard_stream
from .wire import AGENT, Connection, ConnectionLost, Link, conversation_of

Session = Callable[[Connection], Awaitable[None]]
Log = structlog.typing.FilteringBoundLogger


class Listener:
    """A listening socket and the connections it serves.

    ``shutdown`` stops accepting, closes connections waiting for a request at once, gives requests in flight up to
    ``grace`` seconds to finish, then cancels what is left, long-lived sessions included (a cancelled upload removes
    its partial file on the way out). Node sessions outlive the requests, since those may need their nodes.
    """

    def __init__(self, sessions: Mapping[str, Session], log: Log, security: Security, limits: Limits) -> None:
        self.sessions = sessions
        self.log = log
        self.requests = RequestLines(log)  # each request's line
        self.security = security
        self.limits = limits
        self.closing = False
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` (0: any free port) and return the port.

        From here on the process is a server whose log is one JSON object per line, so an error that escapes every
        owner (a bug) is logged as one such line too, instead of asyncio's traceback on standard error."""
        asyncio.get_running_loop().set_exception_handler(self._log_stray_error)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Link(FrameDecoder(self.limits.max_frame_size), on_connected=self._accept),
            host,
            port,
            ssl=self.security.server_tls,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self, grace: float) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for task in self._waiting:
            task.cancel()
        busy = set(self._busy)
        if busy:
            self.log.info("draining", requests=len(busy), grace_s=grace)
            await asyncio.wait(busy, timeout=grace)
        remaining = set(self._connections)
        for task in remaining:
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)

    def busy(self, task: asyncio.Task[None]) -> contextlib.AbstractContextManager[None]:
        """Marks a request in flight on the connection ``task`` serves, so shutdown lets it finish."""
        return _member_of(self._busy, task)

    def waiting(self, task: asyncio.Task[None]) -> contextlib.AbstractContextManager[None]:
        """Marks the connection ``task`` serves as waiting for its next request, so shutdown closes it at once."""
        return _member_of(self._waiting, task)

    def _accept(self, link: Link) -> None:
        """A peer connected: its connection gets a task of its own, which this listener owns."""
        task = asyncio.get_running_loop().create_task(self._own(Connection(link)))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _own(self, conn: Connection) -> None:
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            pass  # shutdown cancels connections; ending quietly keeps asyncio from logging the cancellation
        except Exception:  # a bug: this task is the connection's owner, so it logs the error and drops the peer
            self.log.exception("connection_failed", peer=conn.peer)
            conn.abort()

    def _log_stray_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.log.error(
            "stray_error",
            message=context.get("message"),
            exc_info=(type(error), error, error.__traceback__) if isinstance(error, BaseException) else None,
        )

    async def _serve(self, conn: Connection) -> None:
        conn.timeout = self.limits.request_timeout
        try:
            if len(self._connections) > self.limits.max_connections:
                raise ServersUnavailable(
                    f"servers unavailable: this server has {self.limits.max_connections} connections open, its "
                    "limit; try again later"
                )
            role = await _welcome(conn, self.sessions.keys(), self.security.secret)
        except DfsError as err:
            self.log.info("handshake_refused", peer=conn.peer, error=err.message)
            await conn.refuse(err)
            return
        except ConnectionLost as err:
            self.log.info("handshake_failed", peer=conn.peer, error=str(err))
            conn.abort()
            return
        conn.conversation = Conversation(role, Side.LISTENER)
        await self.sessions[role](conn)


@contextlib.contextmanager
def _member_of(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> Iterator[None]:
    tasks.add(task)
    try:
        yield
    finally:
        tasks.discard(task)


async def _welcome(conn: Connection, roles: Collection[str], secret: bytes | None) -> str:
    """Run the listener's handshake (with a secret: prove ours and check the peer's); return the peer's role."""
    nonce = os.urandom(NONCE_BYTES) if secret else None
    handshake = ListenerHandshake(roles, secret, nonce, agent=AGENT, secret_hint=SECRET_HINT)
    while not handshake.done:
        await conn.send(handshake.receive(await conn.recv()))
    return handshake.role


@dataclass(slots=True)
class Request:
    fields: dict[str, Any] = field(default_factory=dict)  # for the request's log line


Handler = Callable[[Connection, Any, Request], Awaitable[None]]


async def serve_requests(
    conn: Connection, handlers: Mapping[type[Message], Handler], listener: Listener, timed: bool = True
) -> None:
    """Answer requests on ``conn`` until the peer leaves, breaks the protocol or the listener shuts down; always
    closes ``conn``. ``handlers`` cover the requests of the peer's role (``protocol.exchanges.REQUESTS``): the
    conversation lets no other frame through where a request is due.

    ``timed``: the peer owes each request's bytes, and taking our answers, within the request timeout. Untimed, only
    the idle timeout applies, between requests: for a peer that may rightly be slow within a request because it relays
    for another, and whose liveness is watched some other way."""
    log, limits = listener.log, listener.limits
    conn.timeout = limits.request_timeout if timed else None
    # The connection's task, looked up once rather than twice a request.
    task = cast("asyncio.Task[None] | None", asyncio.current_task())
    assert task is not None
    try:
        while not listener.closing:
            with listener.waiting(task):
                request = await conn.recv(idle=limits.idle_timeout)  # the idle timer: nothing is owed between requests
            handler = handlers[type(request)]
            with listener.busy(task):
                await _handle(conn, handler, request, log, listener.requests)
    except ConnectionLost:
        pass
    except ProtocolError as err:
        log.warning("protocol_error", peer=conn.peer, error=err.message)
        await conn.refuse(err)
    finally:
        conn.abort()


async def _handle(conn: Connection, handler: Handler, request: Message, log: Any, lines: RequestLines) -> None:
    state = Request()
    started = time.perf_counter()
    outcome = "ok"
    try:
        await handler(conn, request, state)
    except ProtocolError:
        outcome = "protocol_error"
        raise
    except ConnectionLost as err:
        outcome = "peer_gone"
        state.fields["error"] = str(err)
        raise
    except DfsError as err:
        outcome = f"error {int(err.code)}"
        state.fields["error"] = err.message
        await conn.send_error(err)
        if conversation_of(conn).skipping:  # an early answer: the rest of the upload is on its way, drop it
            await discard_stream(conn)
    except Exception as err:
        outcome = f"error {int(InternalError.code)}"
        log.exception("internal_error", op=request.TYPE)
        if not isinstance(err, LocalProtocolError):  # else the frames are out of step: only dropping the peer is safe
            with contextlib.suppress(LocalProtocolError):  # the answer may be out already: then the drop says it
                await conn.send_error(InternalError(f"internal error: {type(err).__name__}; see the server's log"))
        raise ConnectionLost("internal error") from err
    finally:
        duration = time.perf_counter() - started
        metrics.answered(request.TYPE, outcome).inc()
        metrics.latency_of(request.TYPE).observe(duration)
        lines.write(
            op=request.TYPE,
            peer=conn.peer,
            duration_ms=round(duration * 1000, 3),
            outcome=outcome,
            **state.fields,
        )

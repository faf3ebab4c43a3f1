"""The gateway process: granian serving the gateway's ASGI app inside dfsd's own uvloop loop.

The app sends ``/file`` and ``/file/...`` to the REST API and everything else to the S3 API; each request is one
task that streams its body into the client library and its download out to the socket, so memory stays bounded
whatever the sizes. The gateway keeps no state of its own: a pool of client connections to the manager is all.

Start-up prints one line, ``dfsd gateway listening on HOST:PORT``, once the socket accepts connections; port 0
picks a free port, which the line names. ``stop`` (SIGTERM, Ctrl-C) stops accepting, gives requests in flight
``grace`` seconds, then closes the manager connections. Every request is logged in one line (operation, method, path,
status, duration) and counted in ``dfsd_requests_total{op,outcome}`` and ``dfsd_request_seconds{op}`` (with
``--metrics-port``); no header or query is logged, so no signature or secret reaches the log.

What a small GET costs (4 KiB objects, 16 signed keep-alive clients, the objects in the manager's read cache, load 5-9
on 2 cores): the gateway 136-196 µs of CPU, the manager 72-105 (58-83 for the CBOR client's reads of the same objects in
the same runs: through the gateway its reads arrive one by one, and its database thread is woken for each, 2,412 futex
calls in 4 s against 38) and the HTTP client 29-52, against 91-135 µs in all for a CBOR read. A quarter of the gateway's
is granian's threads. Of the loop's busy time (py-spy), writing the request to the manager takes 19 %, granian's send of
the answer (which wakes its thread) 17 %, the client library's round trip 18 %, SigV4 with the request's parsing 15 %,
the request's log line 9 %; the handler's own Python, timed alone, is some 20-25 µs (SigV4 8.8, the log line 5.0). No
one part is large enough to move the GET ratio much: it follows the CPU the whole path takes. Measured and not kept:
granian's ``task_impl`` rust, ``backpressure`` 16 and ``runtime_threads`` 2 (the gateway's CPU per GET within the
default's noise); uvicorn with httptools in this loop's thread, the same app (3 pairs: 139-168 µs against 165-196, and
its rate no higher: 0.38-0.44 of the CBOR reads' against 0.44-0.59; dfs-bench, 3 runs against 2: GET ratio 0.37-0.55
against 0.42-0.67, a 64 MiB PUT 0.22-0.46 of the CBOR upload against 0.52-0.68); flushing the request to the manager at
once rather than at the end of the loop's turn, so that the manager starts on it while the loop parses the next
(dfs-bench, 7 pairs at load 3-6: new/old 0.80-1.27, median 1.00).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.net import SocketSpec
from granian.server.embed import Server

from dfsd.client import DfsError
from dfsd.protocol import CHUNK_SIZE

from ... import metrics
from .credentials import Credentials
from .http import HttpRequest, Receive, Scope, Send
from .rest import RestApi, is_rest
from .s3api import S3Api
from .store import ClientPool, Store

log = structlog.get_logger("dfsd.gateway")

# Request line and headers together: S3's own limit on headers is 8 KiB of user metadata plus the usual headers;
# 64 KiB admits every real client and refuses header floods (431, from the app below READ_BUFFER, from granian above).
MAX_HEADER_BYTES = 64 * 1024

# granian's read buffer for each connection (hyper's max_buf_size): it bounds a request's head and the pieces a body is
# handed over in. A data frame's worth (CHUNK_SIZE), not 64 KiB: each piece is a wake-up of this loop from granian's
# thread, and with 1 MiB pieces (measured, 256 MiB PUTs alternated with 64 KiB ones, 3 pairs, load 9-11) the gateway
# spent 0.76-0.81 of the CPU per MiB and uploaded 1.2-1.6 times as fast. A download's memory is not affected.
READ_BUFFER = CHUNK_SIZE

# Multipart uploads untouched for this long are aborted with their parts (S3 leaves that to a lifecycle rule; a day is
# what most rules choose), checked at least this often.
DEFAULT_UPLOAD_EXPIRY = 24 * 3600.0
EXPIRY_CHECK_INTERVAL = 3600.0

HEAD_TOO_LARGE = f"the request line and headers are over {MAX_HEADER_BYTES} bytes; send less metadata".encode()

# granian's backlog: connections waiting to be accepted.
BACKLOG = 1024


class Gateway:
    """The S3 and REST gateway of one cluster; ``run`` serves until ``stop``."""

    def __init__(
        self,
        host: str,
        port: int,
        manager: str,
        credentials: Credentials,
        *,
        anonymous: bool = False,
        security: Any = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        grace: float = 10.0,
        domain: str = "",
        metrics_port: int | None = None,
        upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
    ) -> None:
        self.host, self.port = host, port
        self.pool = ClientPool(manager, security)
        store = Store(self.pool)
        self.s3 = S3Api(store, credentials, anonymous=anonymous, domain=domain)
        self.rest = RestApi(self.pool, credentials, anonymous=anonymous)
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.grace = grace
        self.metrics_port = metrics_port
        self.upload_expiry = upload_expiry
        self.store = store
        self._server: _EmbeddedServer | None = None
        self._stopping = False

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = HttpRequest.from_scope(scope, receive, send)
        try:
            if request.head_size > MAX_HEADER_BYTES:
                request.operation = "refused"
                await request.respond(431, [("content-type", "text/plain"), ("connection", "close")], HEAD_TOO_LARGE)
                return
            await (self.rest if is_rest(request.raw_path) else self.s3).handle(request)
        except Exception as error:
            log.warning("request_failed", method=request.method, path=request.raw_path, error=repr(error))
            if not request.response_started:
                await request.respond(500, [("content-type", "text/plain"), ("connection", "close")], b"internal error")
            else:
                raise  # the response is under way: only cutting the connection tells the client
        finally:
            duration = time.perf_counter() - started
            metrics.answered(request.operation, str(request.status)).inc()
            metrics.latency_of(request.operation).observe(duration)
            log.info(
                "request",
                op=request.operation,
                method=request.method,
                path=request.raw_path[:200],
                status=request.status,
                duration_ms=round(duration * 1000, 3),
            )

    async def run(self, on_ready: Callable[[str, int], None] | None = None) -> None:
        self._server = _EmbeddedServer(
            self.app,
            address=self.host,
            port=self.port,
            interface=Interfaces.ASGINL,
            backlog=BACKLOG,
            http1_settings=HTTP1Settings(max_buffer_size=READ_BUFFER),
            log_enabled=False,
            ssl_cert=self.tls_cert,
            ssl_key=self.tls_key,
        )
        self._server.workers_kill_timeout = max(1, round(self.grace))
        self._server.on_bound = lambda port: on_ready(self.host, port) if on_ready else None
        if self._stopping:
            return
        if self.metrics_port is not None:
            log.info("metrics", url=f"http://{self.host}:{metrics.serve(self.host, self.metrics_port)}/metrics")
        expiry = asyncio.create_task(self._expire_uploads())
        try:
            await self._server.serve()
        finally:
            expiry.cancel()
            await asyncio.gather(expiry, return_exceptions=True)
            await self.pool.close()

    async def _expire_uploads(self) -> None:
        """Abort multipart uploads abandoned for longer than ``upload_expiry``, checking every half of that (at most
        hourly). Every gateway does it; an upload aborted twice is no error."""
        interval = min(self.upload_expiry / 2, EXPIRY_CHECK_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            try:
                if expired := await self.store.expire_uploads(self.upload_expiry):
                    log.info("uploads_expired", count=expired, older_than_s=self.upload_expiry)
            except DfsError as error:
                log.warning("upload_expiry_failed", error=error.message)

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.stop()


class _EmbeddedServer(Server):
    """granian's embedded server, binding its socket once (not per worker) so a port 0 is known: ``on_bound``."""

    on_bound: Callable[[int], None] | None = None

    def _init_shared_socket(self) -> None:
        self._ssp = None
        holder = SocketSpec(self.bind_addr, self.bind_port, self.backlog).build()
        self._shd = holder  # type: ignore[assignment]
        probe = socket.socket(fileno=socket.dup(holder.get_fd()))
        try:
            self.bound_port = int(probe.getsockname()[1])
        finally:
            probe.close()

    def startup(self, spawn_target: Any, target_loader: Any) -> None:
        super().startup(spawn_target, target_loader)
        if self.on_bound is not None:
            asyncio.get_running_loop().call_soon(self.on_bound, self.bound_port)

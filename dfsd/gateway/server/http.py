"""The ASGI edge of the gateway: one request as a value with a streamed body, and responses sent back.

``HttpRequest`` holds what the handlers read (method, the raw path and query as sent, headers) and hands the body
out as an async iterator of chunks straight from the server, so no body is ever held whole: the handlers stream it
through hashers and decoders into the client library. A client that goes away mid-body ends the iterator with
``ClientGone``; a body shorter than its Content-Length is noticed by whoever counts it (``body_source``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ..sigv4 import SignedRequest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

# A response body up to this size is gathered and sent with the head in one message (one write on the socket, no
# chunk messages): the size of a file that comes whole inside the manager's answer (protocol INLINE_MAX).
WHOLE_BODY_MAX = 64 * 1024

# A streamed response body goes to granian in pieces of at most this size: granian queues a few pieces per response
# whatever their size, so this bounds what a download holds (measured, four 1 GiB downloads at once: 1 MiB pieces
# peaked at 92-97 MiB of RSS, 256 KiB ones at 77 MiB).
RESPONSE_PIECE = 256 * 1024


class ClientGone(Exception):
    """The HTTP client disconnected before its request body ended."""


@dataclass
class HttpRequest:
    method: str
    raw_path: str  # still percent-encoded, as sent
    query: str  # the raw text after '?'
    headers: Headers
    receive: Receive = field(repr=False)
    send: Send = field(repr=False)
    body_started: bool = False
    body_done: bool = False
    response_started: bool = False
    status: int = 0  # the answer's status, once started
    operation: str = "unknown"  # what the request asked, for its log line and metrics (e.g. "s3.put_object")
    # Each header by name, made by ``header`` at its first call.
    _by_name: dict[str, str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive, send: Send) -> HttpRequest:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        return cls(
            method=scope["method"].upper(),
            raw_path=raw_path.decode("latin-1").partition("?")[0],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]],
            receive=receive,
            send=send,
        )

    @property
    def head_size(self) -> int:
        """The request line's target and the headers, in bytes as sent (near enough: separators counted as 4)."""
        return len(self.raw_path) + len(self.query) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def header(self, name: str) -> str | None:
        """A header's value (repeats joined by commas), None if absent; ``name`` in lower case."""
        if self._by_name is None:  # gathered once: a request looks up a handful of headers, some twice
            found: dict[str, str] = {}
            for key, value in self.headers:
                found[key] = f"{found[key]},{value}" if key in found else value
            self._by_name = found
        return self._by_name.get(name)

    @property
    def params(self) -> dict[str, str]:
        """The query's parameters, decoded (the last of a repeated one wins)."""
        if not self.query:  # most requests: nothing to parse (asked twice per S3 request)
            return {}
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def signed(self) -> SignedRequest:
        return SignedRequest(self.method, self.raw_path, self.query, self.headers)

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def body_unread(self) -> bool:
        """Some of the body was not read: an answer now must close the connection, which cannot carry another
        request while the rest of this body is in the way."""
        if self.body_done:
            return False
        return self.body_started or bool(self.content_length) or self.header("transfer-encoding") is not None

    async def body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive (each at most what the server read at once)."""
        self.body_started = True
        while not self.body_done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("the client disconnected before its request body ended")
            self.body_done = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                yield chunk

    async def read_small(self, limit: int) -> bytes:
        """A body that must be small (XML, a form): at most ``limit`` bytes, else ``ValueError``."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.body():
            total += len(chunk)
            if total > limit:
                raise ValueError(f"the request body is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *, more: bool = False
    ) -> None:
        """Start the response (and send ``body``, the whole of it unless ``more``)."""
        self.response_started = True
        self.status = status
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            }
        )
        await self.send({"type": "http.response.body", "body": body, "more_body": more})

    async def respond_with(
        self, status: int, headers: Iterable[tuple[str, str]], chunks: AsyncIterable[memoryview | bytes], length: int
    ) -> None:
        """Answer with the ``length`` bytes of ``chunks``: a small body gathered first and sent with the head
        (``WHOLE_BODY_MAX``), a larger one streamed as it comes."""
        if length <= WHOLE_BODY_MAX:
            await self.respond(status, headers, b"".join([bytes(chunk) async for chunk in chunks]))
            return
        await self.respond(status, headers, more=True)
        await self.stream(chunks)

    async def stream(self, chunks: AsyncIterable[memoryview | bytes], *, end: bool = True) -> None:
        """Send the next part of a response started with ``more=True`` (the last part, if ``end``); the server's
        writes pace the reads.

        Each piece goes out only once the next one is in hand, so the last waits until ``chunks`` has ended: a
        download checks its bytes' SHA-256 when its source ends (``Download``), and a mismatch raised there leaves
        that piece unsent, so the client sees a body shorter than its Content-Length rather than a whole one with
        rotten bytes and a clean end. The iterator is closed on the way out, so a download cut short lets go of its
        connection at once."""
        iterator = aiter(chunks)
        held: bytes | None = None
        try:
            async for chunk in iterator:
                view = memoryview(chunk)
                for start in range(0, len(view), RESPONSE_PIECE):
                    if held is not None:
                        await self.send({"type": "http.response.body", "body": held, "more_body": True})
                    held = bytes(view[start : start + RESPONSE_PIECE])
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()
        if held is not None or end:
            await self.send({"type": "http.response.body", "body": held or b"", "more_body": not end})

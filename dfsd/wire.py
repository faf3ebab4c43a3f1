"""Messages over asyncio streams: the thin I/O layer around the sans-I/O codec in ``dfsd.protocol``.

Every peer (client, manager, storage node) talks through ``Connection``: bytes read from the socket go into a
``FrameDecoder``; messages to send are encoded and written with backpressure (``drain``), so a fast sender never fills
memory. The streaming helpers here are the one implementation of an upload and a download that the client, the manager
and the node all share: the manager relays by feeding what one of them yields into the other.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterable
from typing import TypeVar

from . import metrics
from .protocol import (
    MAX_FRAME_SIZE,
    DfsError,
    FrameDecoder,
    NotAuthorised,
    ProtocolError,
    encode_parts,
    error_from_wire,
)
from .protocol.handshake import NONCE_BYTES, DialerHandshake
from .protocol.messages import Buffer, Data, End, Error, Message, Ok, Put, Store, Stored
from .settings import SECRET_HINT, Security

OPEN = Security()

M = TypeVar("M", bound=Message)

AGENT = "dfsd/0.1"

# Reads of up to 1 MiB take a whole data frame in one or two system calls.
READ_SIZE = 1024 * 1024

# Socket buffers of 4 MiB keep a loopback or LAN pipe full between two hops; the kernel caps them at its own maximum.
SOCKET_BUFFER = 4 * 1024 * 1024

# Pause a writer once 4 MiB wait in its transport: a few chunks in flight, never a file.
WRITE_HIGH_WATER = 4 * 1024 * 1024

# Frames queued within one turn of the event loop are written in one system call, up to this many bytes (a data chunk
# goes out at once).
COALESCE_BYTES = 64 * 1024

# A peer has this long to say hello, or to answer ours, before the connection is dropped.
HANDSHAKE_TIMEOUT = 10.0

# How long a refused peer's remaining input is drained so that our error answer reaches it (see Connection.refuse).
LINGER = 1.0


class ConnectionLost(Exception):
    """The peer closed the connection or the network dropped it."""


class Connection:
    """One peer: ``recv`` and ``send`` whole messages."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame_size: int = MAX_FRAME_SIZE
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame_size)
        self.timeout: float | None = None  # longest wait for the peer to send or take bytes; None: forever
        self._unsent: list[Buffer] = []  # frames queued by send() this turn of the loop, written together
        self._unsent_bytes = 0
        self._flush_scheduled = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        tune_socket(writer)

    @classmethod
    async def open(
        cls, host: str, port: int, role: str, security: Security = OPEN, timeout: float = HANDSHAKE_TIMEOUT
    ) -> Connection:
        """Connect (over TLS if configured), say hello as ``role``, and prove the shared secret if there is one."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    limit=READ_SIZE,
                    ssl=security.client_tls,
                    server_hostname=host if security.client_tls else None,
                )
                conn = cls(reader, writer)
                try:
                    await conn._introduce(role, security.secret, f"{host}:{port}")
                except BaseException:
                    conn.abort()
                    raise
                return conn
        except TimeoutError:
            raise ConnectionLost(f"{host}:{port} did not answer within {timeout:g} s") from None
        except ssl.SSLError as err:
            raise NotAuthorised(f"not authorised: TLS with {host}:{port} failed ({err.reason or err})") from None
        except OSError as err:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {err.strerror or err}") from None

    async def _introduce(self, role: str, secret: bytes | None, server: str) -> None:
        nonce = os.urandom(NONCE_BYTES) if secret else None
        handshake = DialerHandshake(role, secret, nonce, agent=AGENT, peer=server, secret_hint=SECRET_HINT)
        await self.send(handshake.hello())
        while not handshake.done:
            auth = handshake.receive(await self.recv())
            if auth is not None:
                await self.send(auth)

    async def recv(self) -> Message:
        """The next message; raises ``ConnectionLost`` at end of stream, ``ProtocolError`` on garbage."""
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            try:
                async with asyncio.timeout(self.timeout):
                    data = await self._reader.read(READ_SIZE)
            except TimeoutError:
                raise ConnectionLost(f"{self.peer} sent nothing for {self.timeout:g} s") from None
            except OSError as err:
                raise ConnectionLost(f"connection to {self.peer} failed: {err.strerror or err}") from None
            metrics.BYTES_IN.inc(len(data))
            if not data:
                if self._decoder.buffered:
                    raise ConnectionLost(f"{self.peer} closed the connection in the middle of a frame")
                raise ConnectionLost(f"{self.peer} closed the connection")
            self._decoder.receive_data(data)

    async def expect(self, kind: type[M], answer: bool = True) -> M:
        """The next message, which must be ``kind``. If it is an ``answer``, an ``error`` frame in its place is raised
        as its exception; where a request is due (``answer=False``), an ``error`` frame is a protocol error."""
        message = await self.recv()
        if isinstance(message, kind):
            return message
        if isinstance(message, Error) and answer:
            raise error_from_wire(message.code, message.message)
        raise ProtocolError(f"protocol error: expected {kind.TYPE}, got {message.TYPE}")

    async def send(self, message: Message) -> None:
        """Queue ``message`` and wait only if the peer is not keeping up.

        Small messages sent one after another within one turn of the event loop (``sending``, ``data``, ``end``) go
        out in one system call; a message that makes the queue reach COALESCE_BYTES is written at once.
        """
        if self._writer.is_closing():
            raise ConnectionLost(f"connection to {self.peer} is closed")
        parts = encode_parts(message)
        size = sum(len(part) for part in parts)
        metrics.BYTES_OUT.inc(size)
        self._unsent.extend(parts)
        self._unsent_bytes += size
        if self._unsent_bytes >= COALESCE_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if self._writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except TimeoutError:
            raise ConnectionLost(f"{self.peer} took nothing from us for {self.timeout:g} s") from None
        except OSError as err:
            raise ConnectionLost(f"connection to {self.peer} failed: {err.strerror or err}") from None

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._unsent and not self._writer.is_closing():
            self._writer.writelines(self._unsent)
        self._unsent = []
        self._unsent_bytes = 0

    async def refuse(self, err: DfsError) -> None:
        """Answer ``err`` and close.

        The peer's unread bytes are read and dropped for up to LINGER seconds first: closing with unread input makes the
        kernel reset the connection, which can destroy the answer before the peer reads it.
        """
        try:
            await self.send(Error.of(err))
            self._flush()
            self._writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await self._reader.read(READ_SIZE):
                    pass
        except (ConnectionLost, OSError, TimeoutError):
            pass
        self.abort()

    async def send_error(self, err: DfsError) -> None:
        """Tell the peer about ``err`` if it is still there to hear it."""
        try:
            await self.send(Error.of(err))
        except ConnectionLost:
            pass

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    @property
    def peer_closed(self) -> bool:
        """The peer has closed its side (we may not have read everything it sent before)."""
        return self._reader.at_eof()

    def local_address(self) -> str | None:
        sockname = self._writer.get_extra_info("sockname")
        return sockname[0] if isinstance(sockname, tuple) else None

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown, e.g. mid-stream); whole frames already queued are
        handed to the socket first, so an error answer just sent still has its chance to arrive."""
        self._flush()
        self._writer.transport.abort()

    async def close(self) -> None:
        self._flush()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


def tune_socket(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


# --- streams of data frames -------------------------------------------------------------------------------------------
# A stream is a run of ``data`` frames closed by one ``end`` frame. Sources and sinks pass the frames themselves around,
# so a relay forwards the sender's ``end`` (with its checksum) without looking inside.

Stream = AsyncGenerator[Data | End, None]


async def receive_stream(conn: Connection, uploaded: bool = False) -> Stream:
    """Yield the ``data`` frames of a stream, then its ``end``.

    In a download an ``error`` frame may cut the stream short and is raised; an uploader may not send one (it aborts
    by closing the connection), so in an ``uploaded`` stream it is a protocol error.
    """
    while True:
        message = await conn.recv()
        if type(message) is Data:
            yield message
        elif type(message) is End:
            yield message
            return
        elif isinstance(message, Error) and not uploaded:
            raise error_from_wire(message.code, message.message)
        else:
            raise ProtocolError(f"protocol error: expected data or end, got {message.TYPE}")


async def discard_stream(conn: Connection) -> None:
    """Skip the rest of a stream the peer is still sending, so the connection can carry the next request."""
    while not isinstance(await conn.recv(), End | Error):
        pass


class StreamProgress:
    """Whether a stream's ``end`` has been written (``Connection.send`` writes before its first await)."""

    ended = False


async def send_stream(
    conn: Connection, stream: AsyncIterable[Data | End], progress: StreamProgress | None = None
) -> None:
    """Send every frame of ``stream``, which must finish with ``end``."""
    async for message in stream:
        if progress is not None:
            progress.ended = type(message) is End
        await conn.send(message)
        if type(message) is End:
            return
    raise ConnectionLost("the stream being sent ended without its end frame")


async def send_upload(conn: Connection, request: Put | Store, stream: AsyncIterable[Data | End]) -> Stored:
    """Send ``request``, wait for ``ok``, send ``stream``, and return the final answer (``stored``).

    The answer is watched for while the stream goes out: a receiver that fails early (disk full, a wrong size) answers
    at once, and the rest of the file is not sent for nothing. A request naming its size and SHA-256 may be answered
    ``stored`` in place of ``ok`` (the name already holds exactly those bytes): then nothing is sent.
    """
    await conn.send(request)
    accepted = await conn.recv()
    if isinstance(accepted, Stored):
        if (accepted.size, accepted.sha256) != (request.size, request.sha256):
            raise ProtocolError("protocol error: expected ok, got a stored that does not match the request")
        return accepted
    if isinstance(accepted, Error):
        raise error_from_wire(accepted.code, accepted.message)
    if not isinstance(accepted, Ok):
        raise ProtocolError(f"protocol error: expected ok, got {accepted.TYPE}")
    progress = StreamProgress()
    sender = asyncio.ensure_future(send_stream(conn, stream, progress))
    answer = asyncio.ensure_future(conn.recv())
    try:
        await asyncio.wait((sender, answer), return_when=asyncio.FIRST_COMPLETED)
        if not sender.done():
            # The receiver answered early: stop, and close the stream (once) so the connection stays in step.
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if not progress.ended:
                await conn.send(End())
        else:
            sender.result()  # raises the source's or the connection's error, if any
        message = await answer
    finally:
        for task in (sender, answer):
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    if isinstance(message, Error):
        raise error_from_wire(message.code, message.message)
    if not isinstance(message, Stored):
        raise ProtocolError(f"protocol error: expected stored, got {message.TYPE}")
    return message

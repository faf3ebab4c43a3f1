"""Messages over asyncio streams: the thin I/O layer around the sans-I/O protocol in ``dfsd.protocol``.

Every peer (client, manager, storage node) talks through ``Connection``: bytes read from the socket go into a
``FrameDecoder``; messages to send are encoded and written with backpressure (``drain``), so a fast sender never fills
memory. After the handshake each connection owns a ``Conversation`` (``protocol/exchanges.py``), which sees every frame
sent and received and refuses one out of order: the order of frames lives there, not here. Moving a file's bytes over
a connection is ``dfsd/transfer.py``'s.

Timers measure only a peer that owes us something (PROTOCOL.md 9.5), and the conversation says when it does
(``their_turn``): then the rest of the message it owes must come within ``Connection.timeout`` of its last byte. While
nothing is owed, ``recv`` waits for the ``idle`` time it is given, or forever: a peer that is waiting for us, or for the
one it relays for, is never cut off for being silent. Whatever the turn, a peer must take the bytes we sent within
``Connection.timeout``; "taken" counts what left our transport buffer and then our kernel's send queue (SIOCOUTQ), so a
slow reader that keeps reading is served however long it takes.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import ssl
import struct
import termios
from collections.abc import Awaitable, Callable
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
from .protocol.exchanges import Conversation, Side
from .protocol.handshake import NONCE_BYTES, DialerHandshake
from .protocol.messages import Buffer, Error, Message
from .settings import SECRET_HINT, Security

OPEN = Security()

M = TypeVar("M", bound=Message)
X = TypeVar("X")

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

# While the peer has bytes of ours to take, we look this many times per timeout whether it took some: a peer that takes
# nothing is dropped between one and 1.25 timeouts after it last took a byte.
TAKEN_CHECKS = 4

# Timers may fire this much early (the loop's clock resolution); a deadline this close counts as reached.
CLOCK_SLACK = 0.001


class ConnectionLost(Exception):
    """The peer closed the connection or the network dropped it."""


# A process that relays (the manager between a client and a node) must tell whose fault a failure is: the peer it
# serves, whose error goes back as it was, or a server it dialed on that peer's behalf, whose failure the peer is told
# about as "servers unavailable". The type says which: a connection this process dialed fails with these subclasses.


class ServerLost(ConnectionLost):
    """A server this process dialed closed the connection, stalled, or the network dropped it."""


class ServerProtocolError(ProtocolError):
    """A server this process dialed sent garbage or a frame out of order (or answered that we did)."""


class Connection:
    """One peer: ``recv`` and ``send`` whole messages."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int = MAX_FRAME_SIZE,
        dialed: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame_size)
        # How long the peer may leave undone what it owes us: the next byte of a message that is due or begun, or
        # taking some of the bytes we sent. None: forever (the peer's liveness is watched some other way).
        self.timeout: float | None = None
        self._unsent: list[Buffer] = []  # frames queued by send() this turn of the loop, written together
        self._unsent_bytes = 0
        self._flush_scheduled = False
        self._handed = 0  # bytes handed to the transport so far, to tell how many the peer has taken
        # The order of frames once the handshake is done (None before: the handshake machine has it then).
        self.conversation: Conversation | None = None
        # Whose fault a failure is, in its type: a server we dialed, or a peer that dialed us.
        self._lost: type[ConnectionLost] = ServerLost if dialed else ConnectionLost
        self._garbage: type[ProtocolError] = ServerProtocolError if dialed else ProtocolError
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
                conn = cls(reader, writer, dialed=True)
                try:
                    await conn._introduce(role, security.secret, f"{host}:{port}")
                except BaseException:
                    conn.abort()
                    raise
                conn.conversation = Conversation(role, Side.DIALER)
                return conn
        except TimeoutError:
            raise ServerLost(f"{host}:{port} did not answer within {timeout:g} s") from None
        except ssl.SSLError as err:
            raise NotAuthorised(f"not authorised: TLS with {host}:{port} failed ({err.reason or err})") from None
        except OSError as err:
            raise ServerLost(f"cannot connect to {host}:{port}: {err.strerror or err}") from None

    async def _introduce(self, role: str, secret: bytes | None, server: str) -> None:
        nonce = os.urandom(NONCE_BYTES) if secret else None
        handshake = DialerHandshake(role, secret, nonce, agent=AGENT, peer=server, secret_hint=SECRET_HINT)
        await self.send(handshake.hello())
        while not handshake.done:
            auth = handshake.receive(await self.recv())
            if auth is not None:
                await self.send(auth)

    async def recv(self, idle: float | None = None) -> Message:
        """The next message; raises ``ConnectionLost`` at end of stream or when the peer owes us too long,
        ``ProtocolError`` on garbage or on a frame out of order.

        When the peer owes us the message (the handshake, or the conversation says it is their turn), it must come
        within ``timeout``. When it does not (the next request, or an early answer to an upload still going out), the
        peer may stay silent for ``idle`` seconds (None: forever) before it starts one; once its first byte is in, the
        rest is owed.
        """
        try:
            while True:
                message = self._decoder.next_message()
                if message is not None:
                    if self.conversation is not None:
                        self.conversation.receive(message)
                    return message
                data = await self._read(idle)
                metrics.BYTES.received += len(data)
                if not data:
                    if self._decoder.buffered:
                        raise self._lost(f"{self.peer} closed the connection in the middle of a frame")
                    raise self._lost(f"{self.peer} closed the connection")
                self._decoder.receive_data(data)
        except ProtocolError as err:
            if isinstance(err, self._garbage):
                raise
            raise self._garbage(err.message) from err

    async def _read(self, idle: float | None) -> bytes:
        """The peer's next bytes, under the timer that applies (PROTOCOL.md 9.5)."""
        while True:
            limit = self.timeout if self._owed() else idle
            if limit is None:  # nothing is owed, and silence may last: no timer (a sender judges the taking)
                return await self._read_chunk()
            if not self._untaken():
                try:
                    async with asyncio.timeout(limit):
                        return await self._read_chunk()
                except TimeoutError:
                    raise self._lost(f"{self.peer} sent nothing for {limit:g} s") from None
            # The peer still has bytes of ours to take (the end of a download, say): it is judged on taking them, and
            # its own silence is timed only once it has taken them all.
            data = await self._while_taking(self._read_chunk, until_taken=True, period=limit)
            if data is not None:
                return data

    def _owed(self) -> bool:
        """The peer owes us bytes now: a frame it has begun, or the next frame of the handshake or the exchange."""
        conversation = self.conversation
        return self._decoder.buffered > 0 or conversation is None or conversation.their_turn

    async def _read_chunk(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except OSError as err:
            raise self._lost(f"connection to {self.peer} failed: {err.strerror or err}") from None

    async def expect(self, kind: type[M]) -> M:
        """The next message, which must be ``kind``; an ``error`` frame in its place (which the conversation lets
        through only where it may answer) is raised as its exception."""
        message = await self.recv()
        if isinstance(message, kind):
            return message
        if isinstance(message, Error):
            raise self.error_of(message)
        raise self._garbage(f"protocol error: expected {kind.TYPE}, got {message.TYPE}")

    def error_of(self, message: Error) -> DfsError:
        """The exception an ``error`` frame from the peer stands for. A server we dialed that says we broke the
        protocol has failed us as surely as one that broke it: either way it is that server's failure."""
        err = error_from_wire(message.code, message.message)
        return self._garbage(err.message) if isinstance(err, ProtocolError) else err

    async def send(self, message: Message) -> None:
        """Queue ``message`` and wait only if the peer is not keeping up.

        Small messages sent one after another within one turn of the event loop (``sending``, ``data``, ``end``) go
        out in one system call; a message that makes the queue reach COALESCE_BYTES is written at once.
        """
        if self._writer.is_closing():
            raise self._lost(f"connection to {self.peer} is closed")
        if self.conversation is not None:
            self.conversation.send(message)  # LocalProtocolError: a bug of ours, and nothing is sent
        parts = encode_parts(message)
        size = sum(len(part) for part in parts)
        metrics.BYTES.sent += size
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
            await self._while_taking(self._writer.drain, until_taken=False, period=0.0)
        except OSError as err:
            raise self._lost(f"connection to {self.peer} failed: {err.strerror or err}") from None

    async def _while_taking(self, wait: Callable[[], Awaitable[X]], until_taken: bool, period: float) -> X | None:
        """Await ``wait()`` while the peer takes the bytes we sent: with a ``timeout``, it must take some within every
        ``timeout`` seconds or the connection is lost. With ``until_taken``, return None once it has taken them all
        (looking every ``period`` / TAKEN_CHECKS seconds when there is no ``timeout``)."""
        if self.timeout is None and not until_taken:
            return await wait()
        every = (self.timeout if self.timeout is not None else period) / TAKEN_CHECKS
        loop = asyncio.get_running_loop()
        taken, since = self._taken(), loop.time()
        while True:
            step = every
            if self.timeout is not None:  # wake at the deadline itself if it comes first
                step = max(min(every, since + self.timeout - loop.time()), CLOCK_SLACK)
            try:
                async with asyncio.timeout(step):
                    return await wait()
            except TimeoutError:
                pass
            if until_taken and not self._untaken():
                return None
            now_taken = self._taken()
            if now_taken > taken:
                taken, since = now_taken, loop.time()
            elif self.timeout is not None and loop.time() >= since + self.timeout - CLOCK_SLACK:
                raise self._lost(f"{self.peer} took nothing from us for {self.timeout:g} s")

    def _untaken(self) -> int:
        """Bytes we sent that the peer has not taken yet: in our transport's buffer or our kernel's send queue."""
        if self._writer.is_closing():
            return 0
        return self._writer.transport.get_write_buffer_size() + _kernel_unsent(self._writer)

    def _taken(self) -> int:
        """Bytes the peer has taken so far; grows only when it takes some."""
        return self._handed - self._untaken()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._unsent and not self._writer.is_closing():
            self._writer.writelines(self._unsent)
            self._handed += self._unsent_bytes
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
        if self.conversation is not None:
            self.conversation.close()

    async def close(self) -> None:
        if self.conversation is not None:
            self.conversation.close()
        self._flush()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


def _kernel_unsent(writer: asyncio.StreamWriter) -> int:
    """Bytes in the kernel's send queue that the peer has not acknowledged (SIOCOUTQ); 0 where that cannot be asked."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        (unsent,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))
    except (OSError, AttributeError):
        return 0
    return int(unsent)


def tune_socket(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


def conversation_of(conn: Connection) -> Conversation:
    """The conversation of a connection past its handshake (every one the helpers below are given)."""
    assert conn.conversation is not None, "the handshake is not done"
    return conn.conversation

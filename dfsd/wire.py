"""Messages over asyncio transports: the thin I/O layer around the sans-I/O protocol in ``dfsd.protocol``.

Every peer (client, manager, storage node) talks through ``Connection``: the transport receives straight into the
``FrameDecoder``'s buffers (``Link``, an ``asyncio.BufferedProtocol``), so a data frame's payload reaches whoever
takes it (a disk thread, the next hop's transport) as a view of the bytes the socket filled, never copied on the way;
messages to send are encoded and written with backpressure, so a fast sender never fills memory. A receiver that
falls behind stops reading once READ_PAUSE bytes wait in its decoder, so TCP holds the sender back.

After the handshake each connection owns a ``Conversation`` (``protocol/exchanges.py``), which sees every frame sent and
received and refuses one out of order: the order of frames lives there, not here. Moving a file's bytes over
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
import contextlib
import fcntl
import os
import socket
import ssl
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from . import traffic
from .protocol import (
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

# A receiver stops reading from its socket once this many bytes wait in its decoder for it (two data frames), and
# reads again when it wants more: the kernel's buffers then fill and TCP holds the sender back. (Measured and not
# kept, 1 GiB: 4 MiB, so that each hop rides out more of the others' pauses on two busy cores: dfs-cat -o new/old
# 0.69-2.0, median 1.22, dfs-push 0.81-1.40, median 1.11, in 8 pairs at load 3-5, for the same CPU; but the manager's
# peak memory during dfs-bench's dfs-push rose from 58.4 to 64.8 MiB, over the 64 MiB a process may use. 4 MiB only
# where a client reads, or only where the manager reads a node's download: no gain, medians 1.01 and 0.97 in 4 pairs
# each. Nor did waking the connection only once a whole frame is in, instead of at every read: the CPU of each
# process the same within its noise, 4 pairs.)
READ_PAUSE = 2 * 1024 * 1024

# Socket buffers of 4 MiB keep a loopback or LAN pipe full between two hops; the kernel caps them at its own maximum.
# (Measured and not kept: the kernel's autotuned buffers instead, 6 pairs of 1 GiB at load 3-9: 0.1 s less CPU per
# GiB in all for dfs-cat -o and dfs-push, within the noise of each, but new/old rates 0.36-1.51, median 0.99, and
# 0.54-1.61, median 0.87.)
SOCKET_BUFFER = 4 * 1024 * 1024

# Pause a writer once 4 MiB wait in its transport: a few chunks in flight, never a file.
WRITE_HIGH_WATER = 4 * 1024 * 1024

# Frames queued within one turn of the event loop are written in one system call, up to this many bytes (a data chunk
# goes out at once).
COALESCE_BYTES = 64 * 1024

# Input read only to be dropped (a refused peer's) goes through a scratch buffer of this size.
SCRAP_BYTES = 64 * 1024

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


class Link(asyncio.BufferedProtocol):
    """The transport's side of one ``Connection``: bytes arrive in the decoder's own buffers, and the connection waits
    here for more of them (``arrival``) and for the transport to take more of ours (``writable``).

    Once framing is lost (the decoder is ``broken``) nothing more is decoded: reading pauses, and whatever arrives
    later is dropped (``discard_input``)."""

    def __init__(self, decoder: FrameDecoder, on_connected: Callable[[Link], None] | None = None) -> None:
        self.decoder = decoder
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the peer closed its side
        self.gone = False  # the transport is closed (connection_lost)
        self.failure: Exception | None = None  # why, if the network failed it
        self.writable: asyncio.Future[None] | None = None  # while the transport holds too many of our bytes
        self.reading = True  # False while paused: the connection has enough to take first
        self._on_connected = on_connected
        self.loop = asyncio.get_running_loop()  # kept: asking for it asks the kernel for the process id each time
        self._arrived: asyncio.Future[None] | None = None
        self._closed = self.loop.create_future()
        self._discarding = False
        self._scrap: memoryview | None = None  # where dropped input goes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._discarding or self.decoder.broken:
            if self._scrap is None:
                self._scrap = memoryview(bytearray(SCRAP_BYTES))
            return self._scrap
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        traffic.BYTES.received += nbytes
        if not (self._discarding or self.decoder.broken):
            with contextlib.suppress(ProtocolError):  # the decoder keeps it: the next message raises it
                self.decoder.buffer_updated(nbytes)
            if self.decoder.broken or self.decoder.buffered >= READ_PAUSE:
                self._pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep our side open to answer (plain TCP only: TLS cannot half-close, and says so if asked).
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone, self.failure = True, exc
        self._wake()
        self.resume_writing()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def arrival(self) -> asyncio.Future[None]:
        """Resolved when bytes arrive, the peer closes its side or the connection is lost (reading again if it
        paused)."""
        if self._arrived is None or self._arrived.done():
            self._arrived = self.loop.create_future()
        self._resume_reading()
        return self._arrived

    def taken(self) -> None:
        """The connection took a message: once half of READ_PAUSE or less waits, read again, so that the next bytes
        are in before they are wanted."""
        if not self.reading and self.decoder.buffered <= READ_PAUSE // 2 and not self.decoder.broken:
            self._resume_reading()

    async def discard_input(self) -> None:
        """Read and drop whatever the peer still sends, until it closes its side or the connection is lost."""
        self._discarding = True
        while not (self.eof or self.gone):
            await self.arrival()

    async def closed(self) -> None:
        await self._closed

    def _resume_reading(self) -> None:
        if not self.reading and self.transport is not None and not self.gone:
            self.reading = True
            self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if self.reading and self.transport is not None and not self.gone:
            self.reading = False
            self.transport.pause_reading()

    def _wake(self) -> None:
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)


class Connection:
    """One peer: ``recv`` and ``send`` whole messages."""

    def __init__(self, link: Link, dialed: bool = False) -> None:
        assert link.transport is not None, "the link is not connected"
        self._link = link
        self._transport = link.transport
        self._loop = link.loop
        self._decoder = link.decoder
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
        self._send_queue = _SendQueue(self._transport)
        peer = self._transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        tune_socket(self._transport)

    @classmethod
    async def open(
        cls, host: str, port: int, role: str, security: Security = OPEN, timeout: float = HANDSHAKE_TIMEOUT
    ) -> Connection:
        """Connect (over TLS if configured), say hello as ``role``, and prove the shared secret if there is one."""
        try:
            async with asyncio.timeout(timeout):
                _, link = await asyncio.get_running_loop().create_connection(
                    lambda: Link(FrameDecoder()),
                    host,
                    port,
                    ssl=security.client_tls,
                    server_hostname=host if security.client_tls else None,
                )
                conn = cls(link, dialed=True)
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
                    self._link.taken()
                    if self.conversation is not None:
                        self.conversation.receive(message)
                    return message
                self._raise_if_ended()
                await self._read(idle)
        except ProtocolError as err:
            if isinstance(err, self._garbage):
                raise
            raise self._garbage(err.message) from err

    def _raise_if_ended(self) -> None:
        """Raise ``ConnectionLost`` if no more bytes can come: the peer closed its side, or the connection is lost."""
        link = self._link
        if link.failure is not None:
            err = link.failure
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise self._lost(f"connection to {self.peer} failed: {reason}")
        if link.eof or link.gone:
            if self._decoder.buffered:
                raise self._lost(f"{self.peer} closed the connection in the middle of a frame")
            raise self._lost(f"{self.peer} closed the connection")

    async def _read(self, idle: float | None) -> None:
        """Wait for the peer's next bytes (or its end), under the timer that applies (PROTOCOL.md 9.5)."""
        while True:
            limit = self.timeout if self._owed() else idle
            if limit is None:  # nothing is owed, and silence may last: no timer (a sender judges the taking)
                await self._arrival()
                return
            if not self._untaken():
                try:
                    async with asyncio.timeout(limit):
                        await self._arrival()
                        return
                except TimeoutError:
                    raise self._lost(f"{self.peer} sent nothing for {limit:g} s") from None
            # The peer still has bytes of ours to take (the end of a download, say): it is judged on taking them, and
            # its own silence is timed only once it has taken them all.
            if await self._while_taking(self._arrival, until_taken=True, period=limit):
                return

    def _owed(self) -> bool:
        """The peer owes us bytes now: a frame it has begun, or the next frame of the handshake or the exchange."""
        conversation = self.conversation
        return self._decoder.buffered > 0 or conversation is None or conversation.their_turn

    async def _arrival(self) -> bool:
        await self._link.arrival()
        return True

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
        if self._transport.is_closing():
            raise self._lost(f"connection to {self.peer} is closed")
        if self.conversation is not None:
            self.conversation.send(message)  # LocalProtocolError: a bug of ours, and nothing is sent
        parts = encode_parts(message)
        size = sum(len(part) for part in parts)
        traffic.BYTES.sent += size
        self._unsent.extend(parts)
        self._unsent_bytes += size
        if self._unsent_bytes >= COALESCE_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        await self._while_taking(self._drained, until_taken=False, period=0.0)

    async def _drained(self) -> None:
        """Return once the transport takes more of our bytes; raise ``ConnectionLost`` if it never will."""
        writable = self._link.writable
        if writable is not None:
            await asyncio.shield(writable)  # a timer's cancellation must not resolve it for every other waiter
        if self._link.gone:
            self._raise_if_ended()

    async def _while_taking(self, wait: Callable[[], Awaitable[X]], until_taken: bool, period: float) -> X | None:
        """Await ``wait()`` while the peer takes the bytes we sent: with a ``timeout``, it must take some within every
        ``timeout`` seconds or the connection is lost. With ``until_taken``, return None once it has taken them all
        (looking every ``period`` / TAKEN_CHECKS seconds when there is no ``timeout``)."""
        if self.timeout is None and not until_taken:
            return await wait()
        every = (self.timeout if self.timeout is not None else period) / TAKEN_CHECKS
        loop = self._loop
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
        if self._transport.is_closing():
            return 0
        return self._transport.get_write_buffer_size() + self._send_queue.unacknowledged()

    def _taken(self) -> int:
        """Bytes the peer has taken so far; grows only when it takes some."""
        return self._handed - self._untaken()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._unsent and not self._transport.is_closing():
            self._transport.writelines(self._unsent)
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
            self._transport.write_eof()
            async with asyncio.timeout(LINGER):
                await self._link.discard_input()
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
        return self._transport.is_closing()

    @property
    def peer_closed(self) -> bool:
        """The peer has closed its side, and we have read everything it sent before."""
        return self._link.eof and not self._decoder.buffered

    def local_address(self) -> str | None:
        sockname = self._transport.get_extra_info("sockname")
        return sockname[0] if isinstance(sockname, tuple) else None

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown, e.g. mid-stream); whole frames already queued are
        handed to the socket first, so an error answer just sent still has its chance to arrive."""
        self._flush()
        self._transport.abort()
        if self.conversation is not None:
            self.conversation.close()

    async def close(self) -> None:
        if self.conversation is not None:
            self.conversation.close()
        self._flush()
        self._transport.close()
        await self._link.closed()


_QUEUED = struct.Struct("i")


class _SendQueue:
    """Our kernel's send queue of one socket: how many of the bytes in it the peer has not acknowledged (SIOCOUTQ),
    asked each time a connection waits for its peer (once a request). The socket's descriptor and the answer's buffer
    are kept, so the question is one system call and no object: looking the socket up and passing ``ioctl`` an
    immutable buffer (which it first tries as a mutable one, and copies) cost as much as the call.

    (Measured and not kept: asking TCP_INFO first, whose ``getsockopt`` keeps the GIL where ``ioctl`` hands it to
    the node's disk threads and waits to take it back, and asking SIOCOUTQ only when it shows bytes in flight: 1 KiB
    puts, 4 A/B pairs at load 1.8-5.3, the node's user CPU per put 1.13 of before (0.82-1.35), puts/s 0.76
    (0.69-1.93): building the socket object uvloop makes for each ``getsockopt`` costs more than the hand-off.)"""

    def __init__(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None
        self._answer = bytearray(_QUEUED.size)

    def unacknowledged(self) -> int:
        """The bytes not acknowledged yet; 0 where that cannot be asked. Only while the transport is open: its
        descriptor may be another socket's once it is closed."""
        if self._fd is None:
            return 0
        try:
            fcntl.ioctl(self._fd, termios.TIOCOUTQ, self._answer, True)
        except OSError:
            return 0
        return int(_QUEUED.unpack(self._answer)[0])


def tune_socket(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


def conversation_of(conn: Connection) -> Conversation:
    """The conversation of a connection past its handshake (every one the helpers below are given)."""
    assert conn.conversation is not None, "the handshake is not done"
    return conn.conversation

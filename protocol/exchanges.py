"""Which frame may follow which after the handshake: one state machine per connection and side (PROTOCOL.md, 6).

Theory of operation (after h11's ``_state.py``). A connection carries one exchange at a time, and both ends see the
same frames, so one state describes where the exchange is. Each end keeps its own ``Conversation``: it tells the
machine every frame it sends (``send``) and every frame it receives (``receive``), and the machine refuses a frame that
is out of order: ``ProtocolError`` (code 6) when the peer sent it, ``LocalProtocolError`` when we are about to.

The side that dialled (``DIALER``: client, manager on a data connection, node on its control session, peer node) asks;
the side that listened (``LISTENER``) answers. The handshake's role (``protocol/handshake.py``) picks the requests the
listener takes (``REQUESTS``); a ``"node"`` connection is the control session, whose frames follow their own order.

    state        frames that may come next                    → state after them
    IDLE         dialer: a request of its role                → ANSWER, or GO (put/store without data)
    ANSWER       listener: the request's answer | error       → IDLE, or DOWNLOADING (sending without data)
    GO           listener: ok                                 → UPLOADING
                 listener: error                              → IDLE
                 listener: stored, to a put naming its size   → IDLE: the name holds those very bytes already
                           and sha256, and repeating them              (6.2, step 5), and no stream follows
    UPLOADING    dialer: data                                 → UPLOADING
                 dialer: end                                  → STORING
                 listener: error (an early answer)            → SKIPPING
    SKIPPING     dialer: data (already on its way)            → SKIPPING
                 dialer: end                                  → IDLE
    STORING      listener: stored | error                     → IDLE
    DOWNLOADING  listener: data, up to sending.length bytes   → DOWNLOADING
                 listener: end (exactly length bytes) | error → IDLE

    control session: REGISTERING  dialer: register          → INVENTORY
                     INVENTORY    dialer: inventory          → INVENTORY, or JOINING after the page with more: false
                     INVENTORY, JOINING: listener: error     → CLOSED
                     JOINING      listener: ok               → BEATING
                     BEATING      dialer: heartbeat; listener: ok, one per heartbeat not yet answered

    everywhere: the listener may send error 6 (it found the dialer broke the protocol) → CLOSED

Frames can cross on the wire, and every crossing is legal: the dialer's ``end`` and the listener's early ``error``
(each end then sees the other order, and both arrive at IDLE), and heartbeats with their ``ok``. Whose turn it is —
``their_turn`` (the peer owes us a frame: bound the wait), ``idle`` (between requests), ``skipping`` (read the rest of
the peer's stream to its ``end`` and drop it) — is what the I/O layer needs to choose its timeouts and to stay in step.

A ``receive`` that raises ``ProtocolError`` leaves the machine broken: every later ``receive`` raises it again, and the
only frame left to send is the listener's ``error`` 6 before it closes. Whatever frames arrive, ``receive`` either
accepts them or raises ``ProtocolError``; any other exception is a bug.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .limits import INLINE_MAX
from .messages import (
    AbortUpload,
    Bucket,
    Buckets,
    Build,
    ClusterStatus,
    CompleteUpload,
    Compose,
    CreateBucket,
    CreateUpload,
    Data,
    Delete,
    DeleteBucket,
    Drain,
    End,
    Error,
    ExpireUploads,
    Fetch,
    Get,
    Heartbeat,
    Info,
    Inventory,
    List,
    ListBuckets,
    ListHeld,
    Listing,
    ListParts,
    ListUploads,
    Message,
    Ok,
    Parts,
    Put,
    PutPart,
    Rebalance,
    Register,
    Remove,
    Scrub,
    ScrubReport,
    Sending,
    Stat,
    StatBucket,
    StatUpload,
    Status,
    Store,
    Stored,
    Transfer,
    Upload,
    Uploads,
    Verify,
)


class Side(enum.Enum):
    DIALER = "dialer"  # opened the connection and sends the requests
    LISTENER = "listener"  # accepted it and answers


class State(enum.Enum):
    IDLE = "idle"
    ANSWER = "answer"
    GO = "go"
    UPLOADING = "uploading"
    SKIPPING = "skipping"
    STORING = "storing"
    DOWNLOADING = "downloading"
    REGISTERING = "registering"
    INVENTORY = "inventory"
    JOINING = "joining"
    BEATING = "beating"
    BROKEN = "broken"  # the peer broke the protocol; the listener may still say so (error 6)
    CLOSED = "closed"


CONTROL_ROLE = "node"

# What a listener takes from each role (PROTOCOL.md, 4.1); the control session's frames follow their own order.
REQUESTS: dict[str, frozenset[type[Message]]] = {
    "client": frozenset(
        {
            Put,
            Get,
            Delete,
            Stat,
            List,
            Status,
            Rebalance,
            Drain,
            Scrub,
            Compose,
            CreateBucket,
            DeleteBucket,
            StatBucket,
            ListBuckets,
            CreateUpload,
            StatUpload,
            PutPart,
            ListParts,
            ListUploads,
            CompleteUpload,
            AbortUpload,
            ExpireUploads,
        }
    ),
    "manager": frozenset({Store, Fetch, Remove, Transfer, Verify, Build, ListHeld}),
    "peer": frozenset({Store, Fetch}),
    CONTROL_ROLE: frozenset({Register, Inventory, Heartbeat}),
}

# The success answer of each request that is answered by one frame (put and store with their bytes inline included).
_ANSWERS: dict[type[Message], type[Message]] = {
    Put: Stored,
    Store: Stored,
    Get: Sending,
    Fetch: Sending,
    Delete: Ok,
    Remove: Ok,
    Verify: Ok,
    ListHeld: Inventory,
    Stat: Info,
    List: Listing,
    Status: ClusterStatus,
    Rebalance: ClusterStatus,
    Drain: ClusterStatus,
    Scrub: ScrubReport,
    Transfer: Stored,
    CreateBucket: Bucket,
    DeleteBucket: Ok,
    StatBucket: Bucket,
    ListBuckets: Buckets,
    Compose: Stored,
    Build: Stored,
    CreateUpload: Upload,
    StatUpload: Upload,
    PutPart: Ok,
    ListParts: Parts,
    ListUploads: Uploads,
    CompleteUpload: Stored,
    AbortUpload: Ok,
    ExpireUploads: Uploads,
}

# Whose frame each state waits for: the side that owes the next frame (BEATING: the dialer owes heartbeats, and the
# listener an ok for each one not yet answered).
_OWED_BY: dict[State, Side | None] = {
    State.IDLE: None,
    State.ANSWER: Side.LISTENER,
    State.GO: Side.LISTENER,
    State.UPLOADING: Side.DIALER,
    State.SKIPPING: Side.DIALER,
    State.STORING: Side.LISTENER,
    State.DOWNLOADING: Side.LISTENER,
    State.REGISTERING: Side.DIALER,
    State.INVENTORY: Side.DIALER,
    State.JOINING: Side.LISTENER,
    State.BEATING: Side.DIALER,
    State.BROKEN: None,
    State.CLOSED: None,
}


class Conversation:
    """The order of frames on one connection after its handshake, as seen by one end (``side``)."""

    def __init__(self, role: str, side: Side) -> None:
        """``role`` is the dialer's role from its ``hello``; it must be one of REQUESTS."""
        if role not in REQUESTS:
            raise LocalProtocolError(f"no conversation for role {role!r}")
        self.role = role
        self.side = side
        self.state = State.REGISTERING if role == CONTROL_ROLE else State.IDLE
        self.request: Message | None = None  # the request of the exchange under way
        self._remaining = 0  # DOWNLOADING: bytes of the stream still due
        self._unanswered = 0  # BEATING: heartbeats the listener has not answered yet

    # --- whose turn it is ---------------------------------------------------------------------------------------------

    @property
    def our_turn(self) -> bool:
        """We owe the peer a frame."""
        return self._owes(self.side)

    @property
    def their_turn(self) -> bool:
        """The peer owes us a frame: the one wait that deserves a deadline (the request timeout)."""
        return self._owes(_other(self.side))

    @property
    def idle(self) -> bool:
        """Between exchanges: the dialer may ask, the listener waits for it (the idle timeout)."""
        return self.state is State.IDLE

    @property
    def streaming_in(self) -> bool:
        """A stream of data frames is coming to us (to be kept, or, when ``skipping``, dropped)."""
        if self.side is Side.DIALER:
            return self.state is State.DOWNLOADING
        return self.state in (State.UPLOADING, State.SKIPPING)

    @property
    def streaming_out(self) -> bool:
        """We are sending a stream of data frames (an uploader told ``error`` early still owes its ``end``)."""
        if self.side is Side.DIALER:
            return self.state in (State.UPLOADING, State.SKIPPING)
        return self.state is State.DOWNLOADING

    @property
    def skipping(self) -> bool:
        """We answered an upload early (an error): the rest of the peer's stream, up to its ``end``, must be read and
        dropped before the next request."""
        return self.state is State.SKIPPING and self.side is Side.LISTENER

    @property
    def closed(self) -> bool:
        return self.state in (State.BROKEN, State.CLOSED)

    def _owes(self, side: Side) -> bool:
        if self.state is State.BEATING and side is Side.LISTENER:
            return self._unanswered > 0
        return _OWED_BY[self.state] is side

    # --- frames -------------------------------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Record a frame we are about to send; ``LocalProtocolError`` if it is not ours to send now."""
        if self.state is State.BROKEN and self.side is Side.LISTENER and _is_protocol_error(message):
            self.state = State.CLOSED
            return
        try:
            self._advance(self.side, message)
        except ProtocolError as err:
            raise LocalProtocolError(f"we may not send this now: {err.message}") from None

    def receive(self, message: Message) -> None:
        """Record a frame the peer sent; ``ProtocolError`` if it broke the order (the machine then stays broken)."""
        if self.state is State.BROKEN:
            raise ProtocolError(f"protocol error: {message.TYPE} after the peer broke the protocol")
        try:
            self._advance(_other(self.side), message)
        except ProtocolError:
            self.state = State.BROKEN
            raise

    def close(self) -> None:
        """The connection is gone (closed by either end, e.g. to abandon an upload): nothing more may be sent."""
        self.state = State.CLOSED

    # --- the transitions ----------------------------------------------------------------------------------------------

    def _advance(self, sender: Side, message: Message) -> None:
        """Move past ``message`` from ``sender``, or raise ``ProtocolError`` (whoever's fault the caller decides)."""
        state = self.state
        if state is State.CLOSED:
            raise ProtocolError(f"protocol error: {message.TYPE} after the connection's last frame")
        if sender is Side.LISTENER and _is_protocol_error(message):
            self.state = State.CLOSED  # 6.1: its sender closes right after it
        elif state is State.IDLE:
            self._ask(sender, message)
        elif state in (State.REGISTERING, State.INVENTORY, State.JOINING, State.BEATING):
            self._control(sender, message)
        elif state in (State.ANSWER, State.GO, State.STORING):
            self._answer(sender, message)
        elif state in (State.UPLOADING, State.SKIPPING):
            self._upload(sender, message)
        elif state is State.DOWNLOADING:
            self._download(sender, message)
        else:
            raise ProtocolError(f"protocol error: {message.TYPE} after the peer broke the protocol")

    def _ask(self, sender: Side, message: Message) -> None:
        if sender is not Side.DIALER:
            raise ProtocolError(f"protocol error: {message.TYPE} when no request was made")
        if type(message) not in REQUESTS[self.role]:
            raise ProtocolError(f"protocol error: {message.TYPE} is not a request this server takes")
        self.request = message
        streamed = isinstance(message, Put | Store) and message.data is None
        self.state = State.GO if streamed else State.ANSWER

    def _answer(self, sender: Side, message: Message) -> None:
        if self.state is State.GO:
            expected: type[Message] = Ok
        elif self.state is State.STORING:
            expected = Stored
        else:
            assert self.request is not None
            expected = _ANSWERS[type(self.request)]
        if self.state is State.GO and type(message) is Stored and sender is Side.LISTENER:
            self._already_stored(message)
            return
        if sender is not Side.LISTENER or type(message) not in (expected, Error):
            raise _unexpected(message, expected, Error)
        if type(message) is Ok and self.state is State.GO:
            self.state = State.UPLOADING
        elif type(message) is Sending:
            self._start_download(message)
        else:
            self._finish()

    def _already_stored(self, stored: Stored) -> None:
        """``stored`` in place of ``ok``: only to a ``put`` that names the size and SHA-256 it then repeats."""
        request = self.request
        if not isinstance(request, Put) or request.size is None or request.sha256 is None:
            raise _unexpected(stored, Ok, Error)
        if (stored.size, stored.sha256) != (request.size, request.sha256):
            raise ProtocolError("protocol error: expected ok, got a stored that does not match the request")
        self._finish()

    def _upload(self, sender: Side, message: Message) -> None:
        if sender is Side.LISTENER:
            if self.state is not State.UPLOADING or type(message) is not Error:
                raise ProtocolError(f"protocol error: {message.TYPE} before the end of the upload")
            self.state = State.SKIPPING  # an early answer: the uploader still closes its stream with end
        elif type(message) is End:
            if self.state is State.SKIPPING:
                self._finish()
            else:
                self.state = State.STORING
        elif type(message) is not Data:
            raise _unexpected(message, Data, End)

    def _start_download(self, sending: Sending) -> None:
        inline = sending.length <= INLINE_MAX
        if (sending.data is not None) != inline:
            where = "inside it" if inline else "as a stream"
            raise ProtocolError(f"protocol error: a sending of {sending.length} bytes must carry them {where}")
        if sending.data is not None:
            if len(sending.data) != sending.length:
                raise ProtocolError(f"protocol error: a sending of {sending.length} bytes carries {len(sending.data)}")
            self._finish()
            return
        self._remaining = sending.length
        self.state = State.DOWNLOADING

    def _download(self, sender: Side, message: Message) -> None:
        if sender is not Side.LISTENER or type(message) not in (Data, End, Error):
            raise _unexpected(message, Data, End, Error)
        if type(message) is Data:
            if len(message.data) > self._remaining:
                raise ProtocolError("protocol error: more bytes arrived than the sending announced")
            self._remaining -= len(message.data)
            return
        if type(message) is End and self._remaining:
            raise ProtocolError(f"protocol error: the stream ended {self._remaining} bytes short of its sending")
        self._finish()

    def _control(self, sender: Side, message: Message) -> None:
        kind, state = type(message), self.state
        if sender is Side.DIALER:
            if state is State.REGISTERING and kind is Register:
                self.state = State.INVENTORY
            elif state is State.INVENTORY and isinstance(message, Inventory):
                self.state = State.INVENTORY if message.more else State.JOINING
            elif state is State.BEATING and kind is Heartbeat:
                self._unanswered += 1
            else:
                due = {State.REGISTERING: Register, State.INVENTORY: Inventory, State.BEATING: Heartbeat}.get(state)
                if due is None:  # the node waits for the ok to its registration
                    raise ProtocolError(f"protocol error: unexpected {message.TYPE} on the control session")
                raise _unexpected(message, due)
        elif kind is Error and state in (State.INVENTORY, State.JOINING):
            self.state = State.CLOSED  # 6.1: on the control session every error ends it
        elif kind is Ok and state is State.JOINING:
            self.state = State.BEATING
        elif kind is Ok and state is State.BEATING and self._unanswered:
            self._unanswered -= 1
        else:
            raise ProtocolError(f"protocol error: unexpected {message.TYPE} on the control session")

    def _finish(self) -> None:
        self.state = State.IDLE
        self.request = None
        self._remaining = 0


def _other(side: Side) -> Side:
    return Side.LISTENER if side is Side.DIALER else Side.DIALER


def _is_protocol_error(message: Message) -> bool:
    return isinstance(message, Error) and message.code == ErrorCode.PROTOCOL_ERROR


def _unexpected(message: Message, *expected: type[Message]) -> ProtocolError:
    return ProtocolError(f"protocol error: expected {_names(kind.TYPE for kind in expected)}, got {message.TYPE}")


def _names(names: Iterable[str]) -> str:
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last

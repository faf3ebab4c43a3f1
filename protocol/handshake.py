"""The handshake (PROTOCOL.md, 4): one state machine per side, and the proofs of the shared secret.

``DialerHandshake`` and ``ListenerHandshake`` hold the whole order of the handshake and every check in it (version,
role, nonces, proofs), once: the I/O layer feeds each received frame to ``receive``, sends what it returns, and stops
when ``done``. A refusal is raised: ``ProtocolError`` (6) for a frame out of order or a version or role not spoken,
``NotAuthorised`` (9) for a missing or wrong proof, and, on the dialer, the listener's own ``error`` frame as its
exception. Either way the connection ends (4.6). ``their_turn`` says the peer owes us a frame: the waits to bound.

Proving knowledge of the cluster's shared secret without sending it is an HMAC-SHA256 challenge and response. Each
side of a connection contributes a fresh random nonce (the caller supplies it: this module has no randomness, no clock
and no I/O). The server proves itself first, in ``welcome``, so a client never streams a file to an impostor; the client
then answers with ``auth``. The two proofs use different labels, and the client's also covers its role, so no proof can
be replayed as another (reflection), and fresh nonces on both sides make every proof single-use.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Collection
from typing import TypeVar

from .errors import LocalProtocolError, NotAuthorised, ProtocolError, error_from_wire
from .limits import PROTOCOL_VERSION
from .messages import Auth, Error, Hello, Message, Ok, Welcome

NONCE_BYTES = 32  # 256 random bits from each side

M = TypeVar("M", bound=Message)


class Step(enum.Enum):
    HELLO = "hello"  # the listener waits for hello (the dialer has not sent it yet)
    WELCOME = "welcome"  # the dialer waits for welcome
    AUTH = "auth"  # the listener waits for auth
    OK = "ok"  # the dialer waits for the ok to its auth
    DONE = "done"  # requests may flow
    FAILED = "failed"  # refused: the connection ends


class DialerHandshake:
    """The dialer's side: ``hello()`` first, then ``receive`` each frame until ``done``.

    ``nonce`` is 32 fresh random bytes when we hold ``secret`` (the caller draws them: no randomness here). ``peer``
    names the listener in errors ("HOST:PORT"); ``secret_hint`` tells the user how to give us the secret.
    """

    def __init__(
        self, role: str, secret: bytes | None, nonce: bytes | None, *, agent: str, peer: str, secret_hint: str
    ) -> None:
        if (secret is None) != (nonce is None):
            raise ValueError("a nonce goes with a secret, and only with one")
        self.role = role
        self._secret = secret
        self._nonce = nonce
        self._agent = agent
        self._peer = peer
        self._secret_hint = secret_hint
        self.step = Step.HELLO

    @property
    def done(self) -> bool:
        return self.step is Step.DONE

    @property
    def their_turn(self) -> bool:
        return self.step in (Step.WELCOME, Step.OK)

    def hello(self) -> Hello:
        """The first frame of the connection."""
        _require(self.step, Step.HELLO)
        self.step = Step.WELCOME
        return Hello(PROTOCOL_VERSION, self.role, self._agent, self._nonce)

    def receive(self, message: Message) -> Auth | None:
        """Take the listener's frame; return the frame to send next (our ``auth``), or None."""
        step = self.step
        if step not in (Step.WELCOME, Step.OK):
            raise LocalProtocolError(f"the handshake takes no frame at {step.value}")
        self.step = Step.FAILED  # until this frame is accepted
        if step is Step.WELCOME:
            auth = self._welcomed(_expect(message, Welcome, answer=True))
            self.step = Step.DONE if auth is None else Step.OK
            return auth
        _expect(message, Ok, answer=True)
        self.step = Step.DONE
        return None

    def _welcomed(self, welcome: Welcome) -> Auth | None:
        if welcome.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol error: {self._peer} speaks protocol version {welcome.version}, not {PROTOCOL_VERSION}"
            )
        if welcome.nonce is not None and len(welcome.nonce) != NONCE_BYTES:
            raise ProtocolError(
                f"protocol error: {self._peer} sent a nonce of {len(welcome.nonce)} bytes, not {NONCE_BYTES}"
            )
        if self._secret is None or self._nonce is None:
            if welcome.nonce is not None:
                raise NotAuthorised(f"not authorised: {self._peer} needs the shared secret; {self._secret_hint}")
            return None
        if welcome.nonce is None or not proofs_match(
            server_proof(self._secret, self._nonce, welcome.nonce), welcome.proof
        ):
            raise NotAuthorised(
                f"not authorised: {self._peer} did not prove it knows the shared secret (it runs open, or with "
                "another secret); refusing to talk to it"
            )
        return Auth(client_proof(self._secret, self.role, self._nonce, welcome.nonce))


class ListenerHandshake:
    """The listener's side: ``receive`` each frame and send what it returns (``welcome``, then with a secret ``ok``)
    until ``done``; ``role`` is then the dialer's.

    ``roles`` are the roles this listener takes; ``nonce`` is 32 fresh random bytes when we hold ``secret``.
    """

    def __init__(
        self, roles: Collection[str], secret: bytes | None, nonce: bytes | None, *, agent: str, secret_hint: str
    ) -> None:
        if (secret is None) != (nonce is None):
            raise ValueError("a nonce goes with a secret, and only with one")
        self._roles = roles
        self._secret = secret
        self._nonce = nonce
        self._agent = agent
        self._secret_hint = secret_hint
        self._hello: Hello | None = None
        self.step = Step.HELLO

    @property
    def done(self) -> bool:
        return self.step is Step.DONE

    @property
    def their_turn(self) -> bool:
        return self.step in (Step.HELLO, Step.AUTH)

    @property
    def role(self) -> str:
        """The dialer's role, once its hello is accepted."""
        if self._hello is None:
            raise LocalProtocolError("no hello accepted yet")
        return self._hello.role

    def receive(self, message: Message) -> Welcome | Ok:
        """Take the dialer's frame; return our answer to send (the checks are PROTOCOL.md 4.2, in its order)."""
        step = self.step
        if step not in (Step.HELLO, Step.AUTH):
            raise LocalProtocolError(f"the handshake takes no frame at {step.value}")
        self.step = Step.FAILED  # until this frame is accepted
        if step is Step.HELLO:
            welcome = self._welcome(_expect(message, Hello, answer=False))
            self.step = Step.AUTH if self._secret is not None else Step.DONE
            return welcome
        self._check(_expect(message, Auth, answer=False))
        self.step = Step.DONE
        return Ok()

    def _welcome(self, hello: Hello) -> Welcome:
        if hello.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol error: this server speaks protocol version {PROTOCOL_VERSION}, the peer {hello.version}"
            )
        if hello.role not in self._roles:
            raise ProtocolError(f"protocol error: this server takes no {hello.role[:32]!r} connections")
        self._hello = hello
        if self._secret is None or self._nonce is None:
            return Welcome(PROTOCOL_VERSION, self._agent)
        if hello.nonce is None or len(hello.nonce) != NONCE_BYTES:
            raise NotAuthorised(f"not authorised: this cluster needs the shared secret; {self._secret_hint}")
        proof = server_proof(self._secret, hello.nonce, self._nonce)
        return Welcome(PROTOCOL_VERSION, self._agent, self._nonce, proof)

    def _check(self, auth: Auth) -> None:
        hello = self._hello
        assert hello is not None and hello.nonce is not None and self._secret is not None and self._nonce is not None
        if not proofs_match(client_proof(self._secret, hello.role, hello.nonce, self._nonce), auth.proof):
            raise NotAuthorised("not authorised: wrong shared secret")


def _expect(message: Message, kind: type[M], *, answer: bool) -> M:
    """``message`` if it is a ``kind``. Where an answer is due, an ``error`` frame is raised as its exception; where a
    request is due, it is out of order like any other frame."""
    if isinstance(message, kind):
        return message
    if answer and isinstance(message, Error):
        raise error_from_wire(message.code, message.message)
    raise ProtocolError(f"protocol error: expected {kind.TYPE}, got {message.TYPE}")


def _require(step: Step, due: Step) -> None:
    if step is not due:
        raise LocalProtocolError(f"the handshake is at {step.value}, not {due.value}")


def server_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return _mac(secret, b"dfsd server proof", client_nonce, server_nonce)


def client_proof(secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return _mac(secret, b"dfsd client proof " + role.encode(), client_nonce, server_nonce)


def proofs_match(expected: bytes, given: bytes | None) -> bool:
    """Constant-time comparison, so timing says nothing about how much of a guess was right."""
    return given is not None and hmac.compare_digest(expected, given)


def _mac(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    # Length-prefix each part so that no two different inputs produce the same message.
    message = b"".join(len(part).to_bytes(4, "big") + part for part in (label, client_nonce, server_nonce))
    return hmac.new(secret, message, hashlib.sha256).digest()

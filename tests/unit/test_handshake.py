"""The handshake machines (protocol/handshake.py), in memory: a dialer and a listener passing frames by hand.

Invariant: whatever frames a peer sends, each ``receive`` returns the frame to answer with or raises a ``DfsError``
(``ProtocolError`` for order, version and role, ``NotAuthorised`` for the secret, or the peer's own ``error`` on the
dialer), never any other exception. The error texts are the ones users see (test_security.py checks them end to
end).
"""

from __future__ import annotations

import pytest
from dfsd.protocol import DfsError, NotAuthorised, ProtocolError, ServersUnavailable
from dfsd.protocol.errors import LocalProtocolError
from dfsd.protocol.handshake import NONCE_BYTES, DialerHandshake, ListenerHandshake, Step, client_proof
from dfsd.protocol.messages import Auth, Error, Get, Hello, Message, Ok, Welcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HINT = "set DFS_SECRET or --secret-file"
SECRET = b"s3cret"
NC, NS = b"c" * NONCE_BYTES, b"s" * NONCE_BYTES
ROLES = ("client", "node")


def dialer(secret: bytes | None = None, role: str = "client") -> DialerHandshake:
    nonce = NC if secret else None
    return DialerHandshake(role, secret, nonce, agent="test", peer="h:1", secret_hint=HINT)


def listener(secret: bytes | None = None) -> ListenerHandshake:
    return ListenerHandshake(ROLES, secret, NS if secret else None, agent="test", secret_hint=HINT)


def run(ours: DialerHandshake, theirs: ListenerHandshake) -> None:
    """Pass frames between the two until the dialer is done (raising whatever either side raises)."""
    frame: Message | None = ours.hello()
    while frame is not None:
        frame = ours.receive(theirs.receive(frame))


@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
def test_both_sides_finish_and_the_listener_knows_the_role(secret: bytes | None) -> None:
    ours, theirs = dialer(secret, role="node"), listener(secret)
    run(ours, theirs)
    assert ours.done and theirs.done and theirs.role == "node"
    assert not ours.their_turn and not theirs.their_turn


def test_with_a_secret_four_frames_pass_and_the_proofs_check() -> None:
    ours, theirs = dialer(SECRET), listener(SECRET)
    assert theirs.their_turn
    hello = ours.hello()
    assert hello.nonce == NC and ours.their_turn
    welcome = theirs.receive(hello)
    assert isinstance(welcome, Welcome) and welcome.nonce == NS and theirs.their_turn
    auth = ours.receive(welcome)
    assert auth == Auth(client_proof(SECRET, "client", NC, NS)) and ours.step is Step.OK
    assert theirs.receive(auth) == Ok()
    assert ours.receive(Ok()) is None and ours.done


@pytest.mark.parametrize(
    ("dialer_secret", "listener_secret", "refuser", "message"),
    [
        (None, SECRET, "listener", f"not authorised: this cluster needs the shared secret; {HINT}"),
        (SECRET, None, "dialer", "not authorised: h:1 did not prove it knows the shared secret (it runs open, or with "
                                 "another secret); refusing to talk to it"),
        (SECRET, b"other", "dialer", "not authorised: h:1 did not prove it knows the shared secret"),
    ],
)  # fmt: skip
def test_differently_configured_sides_refuse_as_the_protocol_says(
    dialer_secret: bytes | None, listener_secret: bytes | None, refuser: str, message: str
) -> None:
    ours, theirs = dialer(dialer_secret), listener(listener_secret)
    with pytest.raises(NotAuthorised) as refused:
        run(ours, theirs)
    assert refused.value.message.startswith(message)
    assert (ours if refuser == "dialer" else theirs).step is Step.FAILED


def test_a_dialer_that_skips_its_check_meets_the_wrong_secret_answer() -> None:
    theirs = listener(SECRET)
    theirs.receive(Hello(1, "client", nonce=NC))
    with pytest.raises(NotAuthorised) as refused:
        theirs.receive(Auth(client_proof(b"other", "client", NC, NS)))
    assert refused.value.message == "not authorised: wrong shared secret"


def test_a_proof_for_another_role_is_refused() -> None:
    theirs = listener(SECRET)
    theirs.receive(Hello(1, "client", nonce=NC))
    with pytest.raises(NotAuthorised):
        theirs.receive(Auth(client_proof(SECRET, "node", NC, NS)))


def test_an_open_dialer_refuses_a_welcome_that_asks_for_a_secret() -> None:
    with pytest.raises(NotAuthorised) as refused:
        run(dialer(), _Impostor())
    assert refused.value.message == f"not authorised: h:1 needs the shared secret; {HINT}"


class _Impostor(ListenerHandshake):
    """A listener that sends a nonce to a dialer without one (a dfsd listener never does)."""

    def __init__(self) -> None:
        super().__init__(ROLES, SECRET, NS, agent="test", secret_hint=HINT)

    def receive(self, message: Message) -> Welcome | Ok:
        return Welcome(1, nonce=NS, proof=b"x" * 32)


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (Hello(2, "client"), ProtocolError, "protocol error: this server speaks protocol version 1, the peer 2"),
        (Hello(1, "gateway"), ProtocolError, "protocol error: this server takes no 'gateway' connections"),
        (Hello(1, "x" * 100), ProtocolError, f"protocol error: this server takes no '{'x' * 32}' connections"),
        (Auth(b"x"), ProtocolError, "protocol error: expected hello, got auth"),
        (Error(6, "no"), ProtocolError, "protocol error: expected hello, got error"),
        (Get("a"), ProtocolError, "protocol error: expected hello, got get"),
    ],
)
def test_the_listener_refuses_a_bad_first_frame(frame: Message, error: type[DfsError], message: str) -> None:
    theirs = listener()
    with pytest.raises(error) as refused:
        theirs.receive(frame)
    assert refused.value.message == message
    assert theirs.step is Step.FAILED and not theirs.their_turn


@pytest.mark.parametrize("nonce", [None, b"c" * 31, b"c" * 33], ids=["none", "short", "long"])
def test_a_listener_with_a_secret_needs_a_32_byte_nonce(nonce: bytes | None) -> None:
    with pytest.raises(NotAuthorised) as refused:
        listener(SECRET).receive(Hello(1, "client", nonce=nonce))
    assert refused.value.message == f"not authorised: this cluster needs the shared secret; {HINT}"


def test_the_version_is_checked_before_the_role_and_the_secret() -> None:
    with pytest.raises(ProtocolError, match="protocol version"):
        listener(SECRET).receive(Hello(7, "gateway"))


def test_a_listener_with_a_secret_refuses_a_request_in_place_of_auth() -> None:
    theirs = listener(SECRET)
    theirs.receive(Hello(1, "client", nonce=NC))
    with pytest.raises(ProtocolError) as refused:
        theirs.receive(Get("a"))
    assert refused.value.message == "protocol error: expected auth, got get"


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (Welcome(2), ProtocolError, "protocol error: h:1 speaks protocol version 2, not 1"),
        (Welcome(1, nonce=b"s" * 5), ProtocolError, "protocol error: h:1 sent a nonce of 5 bytes, not 32"),
        (Ok(), ProtocolError, "protocol error: expected welcome, got ok"),
        (Error(1, "servers unavailable: full"), ServersUnavailable, "servers unavailable: full"),
        (Error(9, "not authorised: no"), NotAuthorised, "not authorised: no"),
    ],
)
def test_the_dialer_refuses_a_bad_welcome(frame: Message, error: type[DfsError], message: str) -> None:
    ours = dialer()
    ours.hello()
    with pytest.raises(error) as refused:
        ours.receive(frame)
    assert refused.value.message == message
    assert ours.step is Step.FAILED


@pytest.mark.parametrize(
    ("frame", "error"), [(Error(9, "not authorised: wrong shared secret"), NotAuthorised), (Get("a"), ProtocolError)]
)
def test_the_dialer_raises_what_comes_in_place_of_the_ok_to_its_auth(frame: Message, error: type[DfsError]) -> None:
    ours = dialer(SECRET)
    ours.receive(listener(SECRET).receive(ours.hello()))
    with pytest.raises(error):
        ours.receive(frame)


def test_misusing_a_machine_is_a_local_error() -> None:
    ours = dialer()
    with pytest.raises(LocalProtocolError):
        ours.receive(Welcome(1))  # before our hello
    ours.hello()
    with pytest.raises(LocalProtocolError):
        ours.hello()
    ours.receive(Welcome(1))
    with pytest.raises(LocalProtocolError):
        ours.receive(Ok())  # after the end
    theirs = listener()
    with pytest.raises(LocalProtocolError):
        theirs.role  # noqa: B018 (the property is what is tested)
    with pytest.raises(ValueError):
        DialerHandshake("client", SECRET, None, agent="test", peer="h:1", secret_hint=HINT)


# --- generated frames -------------------------------------------------------------------------------------------------

FRAMES = st.sampled_from(
    [
        Hello(1, "client"), Hello(1, "client", nonce=NC), Hello(1, "node", nonce=b"x"), Hello(2, "client"),
        Hello(1, "gateway"), Welcome(1), Welcome(2), Welcome(1, nonce=NS, proof=b"p" * 32), Welcome(1, nonce=b"n"),
        Auth(b"p" * 32), Auth(client_proof(SECRET, "client", NC, NS)), Ok(), Error(6, "no"), Error(99, "?"), Get("a"),
    ]
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([None, SECRET]), st.lists(FRAMES, max_size=4), st.booleans())
def test_any_frames_are_answered_or_refused_with_a_dfs_error(
    secret: bytes | None, frames: list[Message], as_dialer: bool
) -> None:
    machine: DialerHandshake | ListenerHandshake = dialer(secret) if as_dialer else listener(secret)
    if isinstance(machine, DialerHandshake):
        machine.hello()
    for frame in frames:
        if machine.done:
            return
        try:
            machine.receive(frame)
        except DfsError:
            assert machine.step is Step.FAILED
            return

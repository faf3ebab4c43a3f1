"""The order of frames after the handshake (protocol/exchanges.py), tested in memory with two machines in a pair.

Invariant for any sequence of frames: two ends in the same state judge a frame alike — the sender's ``send`` accepts
it exactly when the receiver's ``receive`` does — and they refuse it with ``LocalProtocolError`` and ``ProtocolError``
respectively, never with any other exception; and two honest ends whose frames cross on the wire never refuse each
other's frames.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from dfsd.protocol import INLINE_MAX, ProtocolError
from dfsd.protocol.errors import LocalProtocolError
from dfsd.protocol.exchanges import REQUESTS, Conversation, Side, State
from dfsd.protocol.messages import (
    AbortUpload,
    Auth,
    Bucket,
    BucketInfo,
    Buckets,
    Build,
    ChosenPart,
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
    FileInfo,
    Get,
    Heartbeat,
    Hello,
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
    PartInfo,
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
    UploadInfo,
    UploadPart,
    Uploads,
    Verify,
    Welcome,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pairs import ConversationPair

DIALER, LISTENER = Side.DIALER, Side.LISTENER
SHA = bytes(32)
CHUNK = bytes(40_000)
BIG = 2 * len(CHUNK)  # a length past INLINE_MAX that two CHUNK frames fill exactly
FILE = FileInfo("a", 2, SHA, 1, 0.0, True)
STATUS = ClusterStatus([], 0, 0)

STORED = Stored(2, SHA)
INLINE_SENDING = Sending(2, 0, 2, SHA, b"ab")
STREAM_SENDING = Sending(BIG, 0, BIG, SHA)
FAILED = Error(5, "bad request")
REFUSED = Error(6, "protocol error")

# Every kind of frame, in the variants the machines tell apart.
POOL: list[Message] = [
    Put("a", 2, SHA, b"ab"), Put("a"), Put("a", 2, SHA), Store(1, 2, SHA, b"ab"), Store(1), Get("a"), Fetch(1),
    Delete("a"), Remove(1), Verify(1, SHA), Stat("a"), List(), Status(), Rebalance(), Drain(1), Scrub(),
    Transfer(1, "h", 1, SHA), ListHeld(), ListHeld(1),
    Register(1, "h", 1, 1, 1), Inventory([1], more=True), Inventory([], more=False), Heartbeat(1, 1),
    Ok(), FAILED, REFUSED, Error(11, "in use"), Data(b"ab"), Data(CHUNK), End(), End(SHA), STORED, INLINE_SENDING,
    STREAM_SENDING, Sending(2, 0, 2, SHA), Sending(BIG, 0, BIG, SHA, b"ab"), Sending(2, 0, 2, SHA, b"a"), Info(FILE),
    Listing([FILE], more=False), STATUS, ScrubReport(0, 0, [], [], 0), Hello(1, "client"), Welcome(1), Auth(SHA),
]  # fmt: skip

# Each exchange's legal sequences, frame by frame, in lockstep; every one ends where it began.
BUCKET = BucketInfo("b", "alice", 1.0)
UPLOAD = UploadInfo("u", "b/k", "alice", 1.0)
EXCHANGES: dict[str, tuple[str, list[tuple[Side, Message]]]] = {
    "put inline": ("client", [(DIALER, Put("a", 2, SHA, b"ab")), (LISTENER, STORED)]),
    "put inline refused": ("client", [(DIALER, Put("a", 2, SHA, b"ab")), (LISTENER, FAILED)]),
    "put streamed": ("client", [
        (DIALER, Put("a")), (LISTENER, Ok()), (DIALER, Data(b"ab")), (DIALER, Data(b"")), (DIALER, End(SHA)),
        (LISTENER, STORED),
    ]),
    "put of bytes the name holds already": ("client", [
        (DIALER, Put("a", 2, SHA)), (LISTENER, Stored(2, SHA, already=True)),
    ]),
    "put refused before ok": ("client", [(DIALER, Put("a")), (LISTENER, FAILED)]),
    "put refused after end": ("client", [(DIALER, Put("a")), (LISTENER, Ok()), (DIALER, End()), (LISTENER, FAILED)]),
    "put answered early": ("client", [
        (DIALER, Put("a")), (LISTENER, Ok()), (DIALER, Data(b"ab")), (LISTENER, FAILED), (DIALER, End()),
    ]),
    "get inline": ("client", [(DIALER, Get("a")), (LISTENER, INLINE_SENDING)]),
    "get empty range": ("client", [(DIALER, Get("a", 2, 0)), (LISTENER, Sending(2, 2, 0, SHA, b""))]),
    "get streamed": ("client", [
        (DIALER, Get("a")), (LISTENER, STREAM_SENDING), (LISTENER, Data(CHUNK)), (LISTENER, Data(CHUNK)),
        (LISTENER, End()),
    ]),
    "get cut short": ("client", [(DIALER, Get("a")), (LISTENER, STREAM_SENDING), (LISTENER, Data(CHUNK)),
                                 (LISTENER, Error(4, "node down"))]),
    "get refused": ("client", [(DIALER, Get("a")), (LISTENER, Error(2, "no such file"))]),
    "delete": ("client", [(DIALER, Delete("a")), (LISTENER, Ok())]),
    "stat": ("client", [(DIALER, Stat("a")), (LISTENER, Info(FILE))]),
    "list": ("client", [(DIALER, List("a")), (LISTENER, Listing([FILE], more=True))]),
    "status": ("client", [(DIALER, Status()), (LISTENER, STATUS)]),
    "rebalance": ("client", [(DIALER, Rebalance()), (LISTENER, STATUS)]),
    "drain": ("client", [(DIALER, Drain(1)), (LISTENER, STATUS)]),
    "scrub": ("client", [(DIALER, Scrub()), (LISTENER, ScrubReport(1, 2, [], [], 0))]),
    "compose": ("client", [(DIALER, Compose("obj", ["p1", "p2"])), (LISTENER, STORED)]),
    "compose refused": ("client", [(DIALER, Compose("obj", ["absent"])), (LISTENER, Error(2, "no part"))]),
    "build": ("manager", [(DIALER, Build(9, [PartInfo(1, 2), PartInfo(3, 4, "h", 1)])), (LISTENER, STORED)]),
    "fetch from a peer": ("peer", [(DIALER, Fetch(1)), (LISTENER, INLINE_SENDING)]),
    "create_bucket": ("client", [(DIALER, CreateBucket("b", "alice")), (LISTENER, Bucket(BUCKET))]),
    "create_bucket refused": ("client", [(DIALER, CreateBucket("b", "bob")), (LISTENER, Error(13, "taken"))]),
    "delete_bucket": ("client", [(DIALER, DeleteBucket("b", "alice")), (LISTENER, Ok())]),
    "stat_bucket": ("client", [(DIALER, StatBucket("b")), (LISTENER, Bucket(BUCKET))]),
    "list_buckets": ("client", [(DIALER, ListBuckets()), (LISTENER, Buckets([BUCKET]))]),
    "create_upload": ("client", [(DIALER, CreateUpload("b/k", "alice")), (LISTENER, Upload(UPLOAD))]),
    "stat_upload": ("client", [(DIALER, StatUpload("u")), (LISTENER, Upload(UPLOAD))]),
    "stat_upload refused": ("client", [(DIALER, StatUpload("x")), (LISTENER, Error(17, "no such upload"))]),
    "put_part": ("client", [(DIALER, PutPart("u", "alice", 1, ".multipart/u/1", bytes(16))), (LISTENER, Ok())]),
    "list_parts": ("client", [(DIALER, ListParts("u")), (LISTENER, Parts([UploadPart(1, 2, bytes(16), 1.0)], False))]),
    "list_uploads": ("client", [(DIALER, ListUploads("b/")), (LISTENER, Uploads([UPLOAD], False))]),
    "complete_upload": ("client", [
        (DIALER, CompleteUpload("u", "alice", [ChosenPart(1, bytes(16))])), (LISTENER, STORED),
    ]),
    "complete_upload refused": ("client", [
        (DIALER, CompleteUpload("u", "alice", [ChosenPart(1, bytes(16))])), (LISTENER, Error(18, "invalid part")),
    ]),
    "abort_upload": ("client", [(DIALER, AbortUpload("u", "alice")), (LISTENER, Ok())]),
    "expire_uploads": ("client", [(DIALER, ExpireUploads(60.0)), (LISTENER, Uploads([], False))]),
    "store inline": ("manager", [(DIALER, Store(1, 2, SHA, b"ab")), (LISTENER, STORED)]),
    "store streamed": ("manager", [
        (DIALER, Store(1, BIG, SHA)), (LISTENER, Ok()), (DIALER, Data(CHUNK)), (DIALER, Data(CHUNK)), (DIALER, End()),
        (LISTENER, STORED),
    ]),
    "store answered early": ("manager", [
        (DIALER, Store(1)), (LISTENER, Ok()), (LISTENER, Error(8, "full")), (DIALER, Data(b"x")), (DIALER, End()),
    ]),
    "fetch streamed": ("manager", [
        (DIALER, Fetch(1)), (LISTENER, STREAM_SENDING), (LISTENER, Data(CHUNK)), (LISTENER, Data(CHUNK)),
        (LISTENER, End()),
    ]),
    "fetch inline": ("manager", [(DIALER, Fetch(1, 0, 2)), (LISTENER, INLINE_SENDING)]),
    "remove": ("manager", [(DIALER, Remove(1)), (LISTENER, Ok())]),
    "verify": ("manager", [(DIALER, Verify(1, SHA)), (LISTENER, Ok())]),
    "verify mismatch": ("manager", [(DIALER, Verify(1, SHA)), (LISTENER, Error(7, "mismatch"))]),
    "transfer": ("manager", [(DIALER, Transfer(1, "h", 1, SHA)), (LISTENER, STORED)]),
    "list held": ("manager", [(DIALER, ListHeld(7)), (LISTENER, Inventory([8, 9], more=True))]),
    "peer store": ("peer", [
        (DIALER, Store(1, 2, SHA)), (LISTENER, Ok()), (DIALER, Data(b"ab")), (DIALER, End()), (LISTENER, STORED),
    ]),
}  # fmt: skip

# The control session ends elsewhere than it starts: registered, or closed by the manager's refusal.
REGISTERED = [
    (DIALER, Register(1, "h", 1, 1, 1)), (DIALER, Inventory([1, 2], more=True)), (DIALER, Inventory([], more=False)),
    (LISTENER, Ok()), (DIALER, Heartbeat(1, 1)), (LISTENER, Ok()), (DIALER, Heartbeat(1, 1)), (LISTENER, Ok()),
]  # fmt: skip


@pytest.mark.parametrize("name", EXCHANGES)
def test_each_exchange_runs_to_idle_and_then_takes_the_next_request(name: str) -> None:
    role, frames = EXCHANGES[name]
    pair = ConversationPair(role)
    pair.exchange(*frames)
    pair.exchange(*frames)
    assert pair.dialer.idle and pair.listener.idle
    assert pair.dialer.request is None


def test_the_control_session_registers_then_beats() -> None:
    pair = ConversationPair("node")
    assert pair.dialer.state is State.REGISTERING and pair.dialer.our_turn and pair.listener.their_turn
    pair.exchange(*REGISTERED)
    assert pair.dialer.state is State.BEATING
    assert pair.listener.their_turn and not pair.listener.our_turn  # the node owes heartbeats, the manager nothing


@pytest.mark.parametrize("at", [1, 2, 3], ids=["after register", "between pages", "after the last page"])
def test_the_manager_may_refuse_a_registration_while_pages_come(at: int) -> None:
    pair = ConversationPair("node")
    pair.exchange(*REGISTERED[:at], (LISTENER, Error(11, "in use")))
    assert pair.dialer.closed and pair.listener.closed


def test_heartbeats_may_run_ahead_of_their_oks() -> None:
    pair = ConversationPair("node")
    pair.exchange(*REGISTERED[:4])
    pair.send(DIALER, Heartbeat(1, 1))
    pair.send(DIALER, Heartbeat(1, 1))
    assert pair.dialer.their_turn  # two oks are owed
    pair.deliver(LISTENER)
    pair.send(LISTENER, Ok())
    pair.deliver(LISTENER)
    pair.deliver(DIALER)
    assert pair.dialer.their_turn and pair.listener.our_turn
    pair.send(LISTENER, Ok())
    pair.deliver(DIALER)
    assert not pair.dialer.their_turn and not pair.listener.our_turn
    with pytest.raises(LocalProtocolError):
        pair.listener.send(Ok())  # no heartbeat left to answer
    with pytest.raises(ProtocolError):
        pair.dialer.receive(Ok())


@pytest.mark.parametrize("data_in_flight", [0, 1, 2])
def test_an_early_answer_crossing_the_uploaders_end_leaves_both_ends_idle(data_in_flight: int) -> None:
    """The listener answers error while the uploader's last frames, ``end`` included, are still on the wire."""
    pair = ConversationPair("client")
    pair.exchange((DIALER, Put("a")), (LISTENER, Ok()))
    for _ in range(data_in_flight):
        pair.send(DIALER, Data(b"x"))
    pair.send(DIALER, End())
    pair.send(LISTENER, FAILED)
    assert pair.listener.skipping and pair.listener.their_turn
    assert pair.dialer.state is State.STORING
    for _ in range(data_in_flight + 1):
        pair.deliver(LISTENER)
    pair.deliver(DIALER)
    assert pair.dialer.idle and pair.listener.idle


def test_after_an_early_answer_the_uploader_still_owes_its_end() -> None:
    pair = ConversationPair("client")
    pair.exchange((DIALER, Put("a")), (LISTENER, Ok()), (DIALER, Data(b"x")), (LISTENER, FAILED))
    assert pair.listener.skipping and pair.listener.streaming_in and pair.listener.their_turn
    assert pair.dialer.our_turn and pair.dialer.streaming_out and not pair.dialer.skipping
    with pytest.raises(LocalProtocolError):
        pair.dialer.send(Get("a"))  # the next request must wait for end
    pair.exchange((DIALER, End()))
    assert not pair.listener.skipping and pair.listener.idle


TURNS = [
    # (role, frames so far, dialer: our_turn, their_turn; listener: our_turn, their_turn)
    ("client", [], (False, False), (False, False)),
    ("client", [(DIALER, Put("a"))], (False, True), (True, False)),
    ("client", [(DIALER, Put("a")), (LISTENER, Ok())], (True, False), (False, True)),
    ("client", [(DIALER, Put("a")), (LISTENER, Ok()), (DIALER, End())], (False, True), (True, False)),
    ("client", [(DIALER, Get("a")), (LISTENER, STREAM_SENDING)], (False, True), (True, False)),
    ("client", [(DIALER, Scrub())], (False, True), (True, False)),
]


@pytest.mark.parametrize(("role", "frames", "dialer", "listener"), TURNS)
def test_whose_turn(
    role: str, frames: list[tuple[Side, Message]], dialer: tuple[bool, bool], listener: tuple[bool, bool]
) -> None:
    pair = ConversationPair(role)
    pair.exchange(*frames)
    assert (pair.dialer.our_turn, pair.dialer.their_turn) == dialer
    assert (pair.listener.our_turn, pair.listener.their_turn) == listener
    assert pair.dialer.idle == pair.listener.idle == (not frames)


@pytest.mark.parametrize(
    ("role", "frames", "sender", "message", "reason"),
    [
        ("client", [], LISTENER, Ok(), "ok when no request was made"),
        ("client", [], DIALER, Data(b"x"), "data is not a request this server takes"),
        ("client", [], DIALER, Store(1), "store is not a request this server takes"),
        ("manager", [], DIALER, Put("a"), "put is not a request this server takes"),
        ("peer", [], DIALER, Remove(1), "remove is not a request this server takes"),
        ("client", [(DIALER, Put("a"))], DIALER, Data(b"x"), "expected ok or error, got data"),
        ("client", [(DIALER, Put("a"))], LISTENER, STORED, "expected ok or error, got stored"),
        ("client", [(DIALER, Put("a", 2))], LISTENER, STORED, "expected ok or error, got stored"),
        ("client", [(DIALER, Put("a", sha256=SHA))], LISTENER, STORED, "expected ok or error, got stored"),
        ("client", [(DIALER, Put("a", 3, SHA))], LISTENER, STORED, "a stored that does not match the request"),
        ("manager", [(DIALER, Store(1, 2, SHA))], LISTENER, STORED, "expected ok or error, got stored"),
        ("client", [(DIALER, Put("a")), (LISTENER, Ok())], DIALER, FAILED, "expected data or end, got error"),
        ("client", [(DIALER, Put("a")), (LISTENER, Ok())], LISTENER, STORED, "stored before the end of the upload"),
        ("client", [(DIALER, Put("a", data=b"x"))], LISTENER, Ok(), "expected stored or error, got ok"),
        ("client", [(DIALER, Delete("a"))], LISTENER, STORED, "expected ok or error, got stored"),
        ("client", [(DIALER, Get("a"))], LISTENER, Sending(2, 0, 2), "must carry them inside it"),
        ("client", [(DIALER, Get("a"))], LISTENER, Sending(BIG, 0, BIG, data=b"x"), "must carry them as a stream"),
        ("client", [(DIALER, Get("a"))], LISTENER, Sending(2, 0, 2, data=b"x"), "of 2 bytes carries 1"),
        ("client", [(DIALER, Get("a")), (LISTENER, STREAM_SENDING)], LISTENER, End(), "ended 80000 bytes short"),
        ("client", [(DIALER, Get("a")), (LISTENER, STREAM_SENDING), (LISTENER, Data(CHUNK)), (LISTENER, Data(CHUNK))],
         LISTENER, Data(b"x"), "more bytes arrived than the sending announced"),
        ("node", [], DIALER, Heartbeat(1, 1), "expected register, got heartbeat"),
        ("node", [], LISTENER, FAILED, "unexpected error on the control session"),
        ("node", REGISTERED[:1], DIALER, Heartbeat(1, 1), "expected inventory, got heartbeat"),
        ("node", REGISTERED[:3], DIALER, Heartbeat(1, 1), "unexpected heartbeat on the control session"),
        ("node", REGISTERED, LISTENER, FAILED, "unexpected error on the control session"),
        ("node", REGISTERED, DIALER, Register(1, "h", 1, 1, 1), "expected heartbeat, got register"),
    ],
)  # fmt: skip
def test_an_illegal_frame_is_the_senders_fault_for_the_sender_and_the_peers_for_the_receiver(
    role: str, frames: list[tuple[Side, Message]], sender: Side, message: Message, reason: str
) -> None:
    pair = ConversationPair(role)
    pair.exchange(*frames)
    receiver = pair.ends[LISTENER if sender is DIALER else DIALER]
    with pytest.raises(LocalProtocolError, match=reason):
        pair.ends[sender].send(message)
    with pytest.raises(ProtocolError, match=f"^protocol error: .*{reason}"):
        receiver.receive(message)


def test_a_broken_conversation_stays_broken_and_can_only_say_so() -> None:
    pair = ConversationPair("client")
    with pytest.raises(ProtocolError):
        pair.listener.receive(End())
    assert pair.listener.closed and not pair.listener.their_turn
    with pytest.raises(ProtocolError):
        pair.listener.receive(Get("a"))  # even a frame that would have been fine
    with pytest.raises(LocalProtocolError):
        pair.listener.send(FAILED)
    pair.listener.send(REFUSED)  # error 6, the last frame
    with pytest.raises(LocalProtocolError):
        pair.listener.send(REFUSED)


@pytest.mark.parametrize("name", EXCHANGES)
def test_the_listener_may_end_any_exchange_with_error_6(name: str) -> None:
    role, frames = EXCHANGES[name]
    for cut in range(len(frames)):
        pair = ConversationPair(role)
        pair.exchange(*frames[:cut], (LISTENER, REFUSED))
        assert pair.dialer.closed and pair.listener.closed
        with pytest.raises(LocalProtocolError):
            pair.dialer.send(frames[0][1])


def test_a_closed_conversation_takes_nothing() -> None:
    conversation = Conversation("client", DIALER)
    conversation.close()
    with pytest.raises(LocalProtocolError):
        conversation.send(Get("a"))
    with pytest.raises(ProtocolError, match="after the connection's last frame"):
        conversation.receive(Ok())


def test_a_role_without_requests_is_a_local_mistake() -> None:
    with pytest.raises(LocalProtocolError):
        Conversation("gateway", LISTENER)


def test_every_request_has_an_exchange() -> None:
    """Each request a role may send is in some legal sequence above, so none is left without a tested path."""
    exercised = {type(frames[0][1]) for _, frames in EXCHANGES.values()} | {Register, Inventory, Heartbeat}
    assert set().union(*REQUESTS.values()) <= exercised


# --- every state against every frame ----------------------------------------------------------------------------------


def reachable() -> Iterator[tuple[str, list[tuple[Side, Message]]]]:
    """(role, frames) for every prefix of every legal sequence: a path to each state an exchange passes through."""
    for role, frames in [*EXCHANGES.values(), ("node", REGISTERED)]:
        for cut in range(len(frames) + 1):
            yield role, frames[:cut]


@pytest.mark.parametrize("sender", [DIALER, LISTENER])
def test_both_ends_judge_every_frame_alike_in_every_state(sender: Side) -> None:
    for role, frames in reachable():
        for message in POOL:
            pair = ConversationPair(role)
            pair.exchange(*frames)
            assert_judged_alike(pair, sender, message)


def assert_judged_alike(pair: ConversationPair, sender: Side, message: Message) -> bool:
    """Whether ``message`` was accepted, after checking that both ends said the same."""
    receiver = LISTENER if sender is DIALER else DIALER
    try:
        pair.ends[sender].send(message)
    except LocalProtocolError:
        with pytest.raises(ProtocolError):
            pair.ends[receiver].receive(message)
        assert pair.ends[receiver].closed
        return False
    pair.ends[receiver].receive(message)
    assert pair.dialer.state is pair.listener.state
    return True


# --- generated sequences ----------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROLES = st.sampled_from(sorted(REQUESTS))
SIDES = st.sampled_from([DIALER, LISTENER])


def legal(conversation: Conversation) -> list[Message]:
    """The frames of the pool this end may send now, but error 6, which ends every conversation (see ``ending``)."""
    allowed = []
    for message in POOL:
        if message is REFUSED:
            continue
        try:
            copy.copy(conversation).send(message)
        except LocalProtocolError:
            continue
        allowed.append(message)
    return allowed


def draw_frame(data: st.DataObject, conversation: Conversation) -> Message:
    """Half the time a frame this end may send, else any frame: sequences get deep and still meet every refusal."""
    allowed = legal(conversation)
    if data.draw(st.booleans()) and allowed:
        return data.draw(st.sampled_from(allowed))
    return data.draw(st.sampled_from(POOL))


def ending(data: st.DataObject) -> bool:
    """Rarely: the listener ends the conversation with error 6 now."""
    return data.draw(st.integers(0, 29)) == 0


@FUZZ
@given(ROLES, st.data())
def test_any_sequence_is_judged_alike_by_both_ends(role: str, data: st.DataObject) -> None:
    pair = ConversationPair(role)
    for _ in range(data.draw(st.integers(0, 40))):
        sender = data.draw(SIDES)
        trial = pair.clone()
        if assert_judged_alike(trial, sender, draw_frame(data, pair.ends[sender])):
            pair = trial  # (a refused frame would end the connection: go on without it)
        event(pair.dialer.state.value)


@FUZZ
@given(ROLES, st.lists(st.sampled_from(POOL), max_size=40), SIDES)
def test_any_frames_from_a_peer_are_taken_or_refused_as_protocol_errors(
    role: str, frames: list[Message], side: Side
) -> None:
    """Whatever a hostile peer sends: accepted, or ProtocolError, and once refused, refused for good."""
    conversation = Conversation(role, side)
    broken = False
    for message in frames:
        try:
            conversation.receive(message)
            assert not broken
        except ProtocolError:
            broken = True


@FUZZ
@given(ROLES, st.data())
def test_honest_ends_never_refuse_each_others_frames_however_they_cross(role: str, data: st.DataObject) -> None:
    """Each end sends only frames its machine allows; the network keeps each direction in order, but the two
    directions interleave as they like, and frames sent to an end that has closed are lost."""
    pair = ConversationPair(role)
    for _ in range(data.draw(st.integers(0, 60))):
        side = data.draw(SIDES)
        allowed = legal(pair.ends[side])
        if side is LISTENER and not pair.listener.closed and ending(data):
            pair.send(side, REFUSED)
        elif data.draw(st.booleans()) and allowed:
            pair.send(side, data.draw(st.sampled_from(allowed)))
        elif pair.in_flight[side]:
            arrive(pair, side)
        event(pair.dialer.state.value)
    while pair.in_flight[Side.DIALER] or pair.in_flight[Side.LISTENER]:
        for side in Side:
            if pair.in_flight[side]:
                arrive(pair, side)
    if not pair.dialer.closed:
        assert pair.dialer.state is pair.listener.state


def arrive(pair: ConversationPair, receiver: Side) -> None:
    if pair.ends[receiver].closed:
        pair.in_flight[receiver].popleft()
    else:
        pair.deliver(receiver)  # must not raise


def test_inline_limit_is_where_sending_switches_to_a_stream() -> None:
    pair = ConversationPair("client")
    pair.exchange((DIALER, Get("a")), (LISTENER, Sending(INLINE_MAX, 0, INLINE_MAX, data=bytes(INLINE_MAX))))
    pair.exchange((DIALER, Get("a")), (LISTENER, Sending(INLINE_MAX + 1, 0, INLINE_MAX + 1)))
    assert pair.dialer.streaming_in and pair.listener.streaming_out

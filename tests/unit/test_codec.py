"""Unit tests for the sans-I/O codec: frames, messages, field checks, names, ranges and error codes.

No sockets and no event loop: bytes go into a ``FrameDecoder`` and messages come out.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import cbor2
import pytest
from comparable import normalise
from dfsd.protocol import (
    CATALOGUE,
    CHUNK_SIZE,
    INVENTORY_PAGE,
    MAX_FRAME_SIZE,
    MAX_LIST_PAGE,
    MAX_NAME_BYTES,
    PROTOCOL_VERSION,
    BadRequest,
    BucketExists,
    BucketNotEmpty,
    BucketNotYours,
    BucketOwnedByYou,
    ChecksumMismatch,
    DfsError,
    ErrorCode,
    FileNotFound,
    FileUnavailable,
    FrameDecoder,
    InternalError,
    InvalidPart,
    Message,
    NameExists,
    NodeIdInUse,
    NoSuchBucket,
    NoSuchUpload,
    NotAuthorised,
    ProtocolError,
    ServersUnavailable,
    StorageFull,
    check_name,
    check_range,
    decode_body,
    encode,
    encode_parts,
    error_from_wire,
)
from dfsd.protocol.limits import MAX_UINT
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
    ManagerInfo,
    NodeInfo,
    Ok,
    PartInfo,
    Parts,
    Put,
    PutPart,
    Rebalance,
    RebalanceInfo,
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

# --- helpers ----------------------------------------------------------------------------------------------------------

SHA = bytes(range(32))
FILE = FileInfo("report.pdf", 1234, SHA, 100, 1_700_000_000.25, True)
FILE_DOWN = FileInfo("données/年報.txt", 0, bytes(32), 2**40, 0.0, False)
NODE = NodeInfo(100, "10.0.0.5", 9001, True, 3, 4096, 10**12, 2 * 10**12, 1_700_000_000.5)
NODE_DOWN = NodeInfo(101, "::1", 65535, False, 0, 0, 0, 0, 0.0, lost=2, orphans=MAX_UINT)
REBALANCE = RebalanceInfo(True, 10, 1, 5, False)

# At least one instance of every message type, with optional fields both absent and present, and extreme integers.
EXAMPLES: list[Message] = [
    Hello(PROTOCOL_VERSION, "client"),
    Hello(PROTOCOL_VERSION, "node", "dfsd/0.1"),
    Welcome(PROTOCOL_VERSION),
    Welcome(PROTOCOL_VERSION, "dfsd/0.1"),
    Error(int(ErrorCode.NOT_FOUND), "file does not exist"),
    Error(999, ""),
    Ok(),
    Data(b""),
    Data(b"hello"),
    Data(bytes(range(256)) * 300),
    End(),
    End(SHA),
    Put("a"),
    Put("ünïcødé name", 0, SHA),
    Put("big", MAX_UINT, SHA),
    Stored(0, SHA),
    Stored(MAX_UINT, bytes(32)),
    Get("a"),
    Get("a", 10, 20),
    Get("a", 0, 0),
    Sending(100, 0, 100),
    Sending(100, 10, 5, SHA),
    Delete("a"),
    Stat("../../etc/passwd"),
    Info(FILE),
    Info(FILE_DOWN),
    List(),
    List("pre", "pre/a", 1000),
    Listing([], False),
    Listing([FILE, FILE_DOWN], True),
    Status(),
    ClusterStatus([], 0, 0),
    ClusterStatus([NODE, NODE_DOWN], 5, 12345),
    ClusterStatus([NODE], 1, 2, ["lost one", "lost/two"], REBALANCE),
    ClusterStatus([], 0, 0, [], RebalanceInfo(False, 0, 0, 0, True)),
    ClusterStatus(
        [NODE],
        1,
        2,
        None,
        REBALANCE,
        [
            ManagerInfo("10.0.0.1:8000", True, True, "postgresql://dfsd:***@db:5432/dfsd"),
            ManagerInfo("10.0.0.2:8000", False, False, "postgresql://dfsd:***@db:5432/dfsd"),
        ],
    ),
    Rebalance(),
    Scrub(),
    Drain(101),
    Drain(101, True),
    Drain(101, False, True),
    ScrubReport(0, 0, [], [], 0),
    ScrubReport(10, 2**40, ["rotten"], ["gone", "also gone"], 3),
    Hello(PROTOCOL_VERSION, "peer", "dfsd/0.1", bytes(32)),
    Welcome(PROTOCOL_VERSION, "dfsd/0.1", bytes(32), SHA),
    Auth(SHA),
    Verify(7, SHA),
    ListHeld(),
    ListHeld(MAX_UINT),
    Register(100, "127.0.0.1", 9001, 2**40, 2**39),
    Inventory([], False),
    Inventory([0, 1, 2**32, MAX_UINT], True),
    Heartbeat(0, MAX_UINT),
    Store(7),
    Store(7, 10, SHA),
    Fetch(7),
    Fetch(7, 1, 2),
    Transfer(7, "10.0.0.6", 9002, SHA),
    Remove(MAX_UINT),
    Remove(1, [2, MAX_UINT]),
    Put("obj", 3, SHA, b"abc", True, {"content-type": "text/plain", "x-amz-meta-ünï": "cødé", "": ""}),
    Sending(3, 0, 3, SHA, b"abc", {"content-type": "text/plain"}),
    Sending(3, 0, 3, SHA, b"abc", None, 1767225600.5),
    End(SHA, {"etag": '"900150983cd24fb0d6963f7d28e17f72"'}),
    Info(dataclasses.replace(FILE, meta={"etag": "0" * 32})),
    Compose("obj", ["p1", "p2"]),
    Compose("bucket/key", [".uploads/1/00001"], True, {"etag": "x-1"}),
    Build(9, [PartInfo(1, 10), PartInfo(2, 20, "10.0.0.6", 9002)]),
    CreateBucket("photos", "alice"),
    DeleteBucket("photos", "alice"),
    StatBucket("photos"),
    ListBuckets(),
    Bucket(BucketInfo("photos", "alice", 1.5)),
    Buckets([]),
    Buckets([BucketInfo("a", "alice", 1.0), BucketInfo("b", "bob", 2.0)]),
    CreateUpload("photos/big.iso", "alice"),
    CreateUpload("photos/video.mp4", "alice", {"content-type": "video/mp4"}),
    StatUpload("0123456789abcdef0123456789abcdef"),
    Upload(UploadInfo("0123456789abcdef0123456789abcdef", "photos/big.iso", "alice", 1.5)),
    Upload(UploadInfo("u", "photos/video.mp4", "alice", 2.0, {"content-type": "video/mp4"})),
    PutPart("u", "alice", 3, ".multipart/u/00003.0f1e", b"\x01" * 16),
    ListParts("u"),
    ListParts("u", 1000, 10),
    Parts([], False),
    Parts([UploadPart(1, 5 << 20, b"\x02" * 16, 3.5), UploadPart(2, 10, b"\x03" * 16, 4.0)], True),
    ListUploads(),
    ListUploads("photos/", "photos/big.iso", "u", 100),
    Uploads([UploadInfo("u", "photos/big.iso", "alice", 1.5)], False),
    CompleteUpload("u", "alice", [ChosenPart(1, b"\x02" * 16), ChosenPart(2, b"\x03" * 16)]),
    CompleteUpload("u", "alice", [ChosenPart(1, b"\x02" * 16)], {"etag": '"abc-1"'}),
    AbortUpload("u", "alice"),
    ExpireUploads(86400.0),
]


def example_id(message: Message) -> str:
    return f"{message.TYPE}-{EXAMPLES.index(message)}"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def drain(decoder: FrameDecoder) -> list[Message]:
    messages = []
    while (message := decoder.next_message()) is not None:
        messages.append(message)
    return messages


def decode_frames(data: bytes) -> list[Message]:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    messages = drain(decoder)
    assert decoder.buffered == 0
    return messages


def decode_wire(value: Any) -> Message:
    """Decode a frame holding ``value`` as cbor2 encodes it."""
    (message,) = decode_frames(frame(cbor2.dumps(value)))
    return message


STREAM = b"".join(encode(message) for message in EXAMPLES)


# --- round trips and framing ------------------------------------------------------------------------------------------


def test_every_message_type_has_an_example() -> None:
    assert {type(message) for message in EXAMPLES} == set(CATALOGUE.values())


@pytest.mark.parametrize("message", EXAMPLES, ids=example_id)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert b"".join(encode_parts(message)) == data
    (decoded,) = decode_frames(data)
    assert type(decoded) is type(message)
    assert normalise(decoded) == normalise(message)
    assert normalise(decode_body(data[4:])) == normalise(message)


@pytest.mark.parametrize("message", EXAMPLES, ids=example_id)
def test_wire_map_has_type_first_and_leaves_out_none(message: Message) -> None:
    data = encode(message)
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    wire = cbor2.loads(data[4:])
    assert next(iter(wire)) == "type"
    assert wire["type"] == message.TYPE
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}  # type: ignore[arg-type]
    assert set(wire) == {"type"} | {name for name, value in fields.items() if value is not None}


@pytest.mark.parametrize("message", EXAMPLES, ids=example_id)
def test_messages_compare_hash_and_print_as_generated_dataclasses_do(message: Message) -> None:
    """The message classes share ``==``, ``hash()`` and ``repr()`` (``messages.Record``) instead of having the
    dataclasses module generate them per class (a cost to every process's start-up): they behave as generated ones."""
    fields = dataclasses.fields(message)  # type: ignore[arg-type]
    values = {field.name: getattr(message, field.name) for field in fields}
    generated = dataclasses.make_dataclass(
        type(message).__qualname__, [(field.name, field.type) for field in fields], frozen=True
    )(**values)
    assert repr(message) == repr(generated)
    twin = dataclasses.replace(message)  # type: ignore[type-var]
    assert twin == message and not twin != message
    assert message != generated and generated != message  # another class, however alike
    try:
        expected = hash(generated)
    except TypeError:  # a field holds a dict or a list
        with pytest.raises(TypeError):
            hash(message)
    else:
        assert hash(message) == expected
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, fields[0].name, None)


def test_every_message_and_record_class_is_made_by_record() -> None:
    """Encoding walks the field names ``@record`` notes (a class made with plain ``@dataclass`` would have none)."""
    from dfsd.protocol import messages

    made = [value for value in vars(messages).values() if dataclasses.is_dataclass(value)]
    assert len(made) >= len(CATALOGUE)
    assert [cls.__name__ for cls in made if cls not in messages._FIELD_NAMES] == []


def test_messages_differing_in_one_field_are_unequal() -> None:
    assert Get("a", offset=1) != Get("a", offset=2)
    assert Get("a") == Get("a", offset=0, length=None)
    assert Ok() == Ok() and Ok() != End()


def test_several_frames_in_one_receive_data() -> None:
    messages = decode_frames(STREAM)
    assert [normalise(m) for m in messages] == [normalise(m) for m in EXAMPLES]


def test_frames_split_at_every_byte_boundary() -> None:
    stream = b"".join(encode(message) for message in EXAMPLES if not (isinstance(message, Data) and message.data))
    stream += encode(Data(b"xyz")) + encode(Ok())
    expected = [normalise(m) for m in decode_frames(stream)]
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        decoder.receive_data(stream[:cut])
        first = drain(decoder)
        decoder.receive_data(stream[cut:])
        assert [normalise(m) for m in first + drain(decoder)] == expected, f"cut at byte {cut}"
        assert decoder.buffered == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    messages: list[Message] = []
    for i in range(len(STREAM)):
        decoder.receive_data(STREAM[i : i + 1])
        messages += drain(decoder)
    assert [normalise(m) for m in messages] == [normalise(m) for m in EXAMPLES]
    assert decoder.buffered == 0


def test_buffered_counts_pending_bytes() -> None:
    data = encode(Hello(PROTOCOL_VERSION, "client"))
    decoder = FrameDecoder()
    decoder.receive_data(data[:-1])
    assert decoder.next_message() is None
    assert decoder.buffered == len(data) - 1
    decoder.receive_data(data[-1:])
    assert decoder.next_message() == Hello(PROTOCOL_VERSION, "client")
    assert decoder.buffered == 0


def test_receive_data_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(bytearray(encode(Ok())))
    decoder.receive_data(memoryview(encode(Status())))
    assert drain(decoder) == [Ok(), Status()]


# --- the data fast path -----------------------------------------------------------------------------------------------

DATA_SIZES = [0, 1, 23, 24, 255, 256, 65535, 65536, 1024 * 1024]


def payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.mark.parametrize("size", DATA_SIZES)
def test_data_fast_path_encodes_exactly_as_cbor2(size: int) -> None:
    data = payload(size)
    expected = frame(cbor2.dumps({"type": "data", "data": data}))
    assert encode(Data(data)) == expected
    assert encode(Data(bytearray(data))) == expected
    assert encode(Data(memoryview(data))) == expected


@pytest.mark.parametrize("size", DATA_SIZES)
def test_data_fast_path_does_not_copy_the_payload(size: int) -> None:
    data = payload(size)
    parts = encode_parts(Data(data))
    assert parts[-1] is data
    assert b"".join(parts) == encode(Data(data))


@pytest.mark.parametrize("size", DATA_SIZES)
def test_data_fast_path_decodes(size: int) -> None:
    data = payload(size)
    (message,) = decode_frames(frame(cbor2.dumps({"type": "data", "data": data})))
    assert type(message) is Data
    assert bytes(message.data) == data


def data_body(head: bytes, payload: bytes) -> bytes:
    """{"type": "data", "data": <payload with the given byte-string head>}, keys in cbor2's order."""
    return b"\xa2\x64type\x64data\x64data" + head + payload


@pytest.mark.parametrize(
    "body",
    [
        data_body(b"\x58\x03", b"abc"),  # one length byte where none is needed
        data_body(b"\x59\x00\x03", b"abc"),
        data_body(b"\x5a\x00\x00\x00\x03", b"abc"),
        data_body(b"\x5b\x00\x00\x00\x00\x00\x00\x00\x03", b"abc"),
        data_body(b"\x5f\x41a\x42bc\xff", b""),  # indefinite-length byte string in two chunks
        b"\xa2\x64data\x43abc\x64type\x64data",  # keys in the other order
        b"\xbf\x64type\x64data\x64data\x43abc\xff",  # indefinite-length map
        b"\xa3\x64type\x64data\x64data\x43abc\x65later\xf5",  # an extra key
        b"\xa2\x78\x04type\x64data\x64data\x43abc",  # non-minimal head on a key
    ],
    ids=["head-1", "head-2", "head-4", "head-8", "indefinite", "key-order", "indefinite-map", "extra-key", "key-head"],
)
def test_data_frame_in_other_cbor_encodings_still_decodes(body: bytes) -> None:
    (message,) = decode_frames(frame(body))
    assert type(message) is Data
    assert bytes(message.data) == b"abc"


def test_data_frame_with_non_minimal_head_for_23_bytes() -> None:
    data = payload(23)
    (message,) = decode_frames(frame(data_body(b"\x58\x17", data)))
    assert bytes(message.data) == data


@pytest.mark.parametrize(
    "body",
    [
        data_body(b"\x41", b"ab"),  # head says one byte, two follow
        data_body(b"\x43", b"ab"),  # head says three bytes, two follow
        data_body(b"\x58", b""),  # head cut short
        data_body(b"\x59\x01", b""),
        data_body(b"\x5a\x00\x00\x00\x05", b"abc"),
        data_body(b"", b""),
        data_body(b"\x63", b"abc"),  # text, not bytes
    ],
)
def test_data_frame_that_is_not_quite_right_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frames(frame(body))


def test_largest_data_frame_fits_the_limit() -> None:
    overhead = len(encode(Data(b"x" * 65536))) - 4 - 65536
    data = payload(MAX_FRAME_SIZE - overhead)
    encoded = encode(Data(data))
    assert len(encoded) == 4 + MAX_FRAME_SIZE
    (message,) = decode_frames(encoded)
    assert bytes(message.data) == data
    with pytest.raises(ProtocolError):
        decode_frames(encode(Data(data + b"!")))


def test_largest_pages_fit_in_a_frame() -> None:
    """The limits agree: a full page of the largest names, ids and integers still fits in one frame."""
    name = "😀" * (MAX_NAME_BYTES // 4)
    biggest = FileInfo(name, MAX_UINT, SHA, MAX_UINT, -1.0e308, False)
    assert len(encode(Listing([biggest] * MAX_LIST_PAGE, True))) <= 4 + MAX_FRAME_SIZE
    assert len(encode(Inventory([MAX_UINT] * INVENTORY_PAGE, True))) <= 4 + MAX_FRAME_SIZE
    assert len(encode(Data(bytes(CHUNK_SIZE)))) <= 4 + MAX_FRAME_SIZE


# --- length prefix ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_FRAME_SIZE + 1, 2**31, 2**32 - 1])
def test_oversized_length_prefix_refused_as_soon_as_four_bytes_arrive(length: int) -> None:
    prefix = struct.pack(">I", length)
    decoder = FrameDecoder()
    for i in range(3):
        decoder.receive_data(prefix[i : i + 1])
        assert decoder.next_message() is None
    with pytest.raises(ProtocolError, match="limit"):
        decoder.receive_data(prefix[3:])
    assert decoder.buffered == 4


def test_oversized_length_prefix_refused_with_body_bytes_in_same_chunk() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.receive_data(struct.pack(">I", MAX_FRAME_SIZE + 1) + b"\x00" * 100)


def test_length_prefix_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", MAX_FRAME_SIZE) + b"\xa1")
    assert decoder.next_message() is None
    assert decoder.buffered == 5


def test_oversized_prefix_of_a_later_frame_refused_when_its_four_bytes_arrive() -> None:
    stream = encode(Ok()) + struct.pack(">I", MAX_FRAME_SIZE + 1)
    decoder = FrameDecoder()
    for i in range(len(stream) - 1):
        decoder.receive_data(stream[i : i + 1])
        drain(decoder)
    with pytest.raises(ProtocolError):
        decoder.receive_data(stream[-1:])


@pytest.mark.parametrize("limit", [0, 9, 100])
def test_custom_frame_limit(limit: int) -> None:
    body = cbor2.dumps({"type": "ok"})  # 9 bytes
    decoder = FrameDecoder(max_frame_size=limit)
    if len(body) <= limit:
        decoder.receive_data(frame(body))
        assert decoder.next_message() == Ok()
    else:
        with pytest.raises(ProtocolError):
            decoder.receive_data(frame(body)[:4])


def test_frame_before_an_oversized_prefix_in_the_same_chunk_is_not_lost() -> None:
    """Regression: next_message decoded a frame, then found the next prefix oversized and raised, losing the frame."""
    stream = encode(Stored(5, SHA)) + struct.pack(">I", MAX_FRAME_SIZE + 1)

    def outcomes(chunks: list[bytes]) -> list[object]:
        decoder = FrameDecoder()
        seen: list[object] = []
        try:
            for chunk in chunks:
                decoder.receive_data(chunk)
                while (message := decoder.next_message()) is not None:
                    seen.append(message)
        except ProtocolError:
            seen.append(ProtocolError)
        return seen

    byte_by_byte = outcomes([stream[i : i + 1] for i in range(len(stream))])
    assert byte_by_byte == [Stored(5, SHA), ProtocolError]
    assert outcomes([stream]) == byte_by_byte


# --- bodies that are not one valid message ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        cbor2.dumps({"type": "ok"}) + b"\x00",
        cbor2.dumps({"type": "ok"}) + cbor2.dumps({"type": "ok"}),
        cbor2.dumps({"type": "data", "data": b"abc"}) + b"\xff",
        cbor2.dumps({"type": "hello", "version": 1, "role": "client"}) + b"\x00" * 1000,
    ],
    ids=["one-byte", "second-item", "data", "many"],
)
def test_trailing_bytes_after_the_cbor_item_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="stray"):
        decode_frames(frame(body))


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xa1\x64type",  # cut short
        b"\xa1\x64type\x62o",
        b"\xff",  # lone break
        b"\x1c",  # reserved additional information
        b"\xa1\x64type\x62\xff\xfe",  # invalid UTF-8
        b"\xa1\x64ty\xffe\x62ok",  # invalid UTF-8 in a key
    ],
)
def test_invalid_cbor_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frames(frame(body))


HELLO = {"type": "hello", "version": 1, "role": "client"}
FILE_WIRE = {"name": "a", "size": 1, "sha256": SHA, "node": 1, "created": 1.5, "available": True}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def without(base: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != key}


WRONG_TYPES: dict[str, Any] = {
    "bool-for-uint": with_(HELLO, version=True),
    "false-for-uint": with_(HELLO, version=False),
    "negative-int": with_(HELLO, version=-1),
    "uint-2**63": with_(HELLO, version=2**63),
    "uint-2**64-1": with_(HELLO, version=2**64 - 1),
    "bignum": with_(HELLO, version=2**80),
    "float-in-uint": with_(HELLO, version=1.0),
    "text-in-uint": with_(HELLO, version="1"),
    "int-for-text": with_(HELLO, role=5),
    "bytes-for-text": with_(HELLO, role=b"client"),
    "int-for-optional-text": with_(HELLO, agent=1),
    "text-for-bytes": {"type": "end", "sha256": "ab"},
    "list-for-bytes": {"type": "end", "sha256": [1, 2]},
    "text-for-data": {"type": "data", "data": "abc"},
    "int-for-bool": {"type": "listing", "files": [], "more": 1},
    "bool-for-float": {"type": "info", "file": with_(FILE_WIRE, created=True)},
    "text-for-float": {"type": "info", "file": with_(FILE_WIRE, created="1.5")},
    "huge-int-for-float": {"type": "info", "file": with_(FILE_WIRE, created=2**64)},
    "negative-int-in-record": {"type": "info", "file": with_(FILE_WIRE, size=-1)},
    "list-for-record": {"type": "info", "file": list(FILE_WIRE.values())},
    "map-for-list": {"type": "listing", "files": {}, "more": False},
    "int-in-list": {"type": "listing", "files": [1], "more": False},
    "bad-record-in-list": {"type": "listing", "files": [FILE_WIRE, with_(FILE_WIRE, node="x")], "more": False},
    "missing-required-field": without(HELLO, "role"),
    "null-required-field": with_(HELLO, role=None),
    "missing-nested-field": {"type": "info", "file": without(FILE_WIRE, "sha256")},
    "missing-list": {"type": "listing", "more": False},
    "unknown-type": {"type": "nope"},
    "type-case": {"type": "OK"},
    "int-type": {"type": 1},
    "bytes-type": {"type": b"ok"},
    "null-type": {"type": None},
    "map-without-type": {"version": 1, "role": "client"},
    "empty-map": {},
    "array-top-level": ["type", "ok"],
    "text-top-level": "ok",
    "int-top-level": 0,
    "null-top-level": None,
    "int-key-map": {1: "ok"},
}


@pytest.mark.parametrize("value", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_field_types_are_protocol_errors(value: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_wire(value)


def test_float_field_accepts_an_integer() -> None:
    message = decode_wire({"type": "info", "file": with_(FILE_WIRE, created=-5)})
    assert isinstance(message, Info)
    assert normalise(message.file.created) == normalise(-5.0)


def test_null_optional_field_reads_as_its_default() -> None:
    assert decode_wire({"type": "end", "sha256": None}) == End()
    message = decode_wire({"type": "get", "name": "a", "offset": None, "length": None})
    assert normalise(message) == normalise(Get("a", 0, None))


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"type": "ok", "later": 1}, Ok()),
        ({"later": [1, {"x": b""}], "type": "ok", 7: None}, Ok()),
        (with_(HELLO, agent="dfsd/9", capabilities=["zstd"]), Hello(1, "client", "dfsd/9")),
        ({"type": "info", "file": with_(FILE_WIRE, replicas=[1, 2])}, Info(FileInfo("a", 1, SHA, 1, 1.5, True))),
        ({"type": "data", "data": b"abc", "compressed": False}, Data(b"abc")),
    ],
)
def test_unknown_keys_are_ignored(value: Any, expected: Message) -> None:
    assert normalise(decode_wire(value)) == normalise(expected)


@pytest.mark.parametrize(
    "bad",
    [frame(b"\xff"), frame(cbor2.dumps({"type": "nope"})), struct.pack(">I", MAX_FRAME_SIZE + 1)],
    ids=["bad-cbor", "bad-message", "oversized"],
)
def test_decoder_stays_broken_after_an_error(bad: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode(Ok()))
    assert decoder.next_message() == Ok()
    with pytest.raises(ProtocolError):
        decoder.receive_data(bad)
        decoder.next_message()
    for _ in range(2):
        with pytest.raises(ProtocolError):
            decoder.next_message()
        with pytest.raises(ProtocolError):
            decoder.receive_data(encode(Ok()))


# --- names and ranges -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "../../etc/passwd",
        "/absolute/path",
        "my file with spaces.txt",
        " ",
        "файл 名前 ملف",
        "😀",
        "line\nbreak\ttab",
        "é" * (MAX_NAME_BYTES // 2),  # exactly the limit in bytes
        "😀" * (MAX_NAME_BYTES // 4),
        "a" * MAX_NAME_BYTES,
    ],
)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) is name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * (MAX_NAME_BYTES + 1),
        "é" * (MAX_NAME_BYTES // 2 + 1),  # 513 characters but 1026 bytes
        "😀" * (MAX_NAME_BYTES // 4 + 1),  # 257 characters but 1028 bytes
        "a" * (MAX_NAME_BYTES - 1) + "é",  # the last character crosses the limit
        "a\x00b",
        "\x00",
        "\ud800",  # lone surrogate: not encodable as UTF-8
        "name\udcff",
    ],
)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_name(name)
    assert info.value.code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "size, offset, length, expected",
    [
        (0, 0, None, 0),
        (0, 0, 0, 0),
        (10, 0, None, 10),
        (10, 0, 10, 10),
        (10, 0, 0, 0),
        (10, 5, None, 5),
        (10, 5, 5, 5),
        (10, 10, None, 0),
        (10, 10, 0, 0),
        (10, 9, 1, 1),
        (MAX_UINT, MAX_UINT, None, 0),
        (MAX_UINT, 0, MAX_UINT, MAX_UINT),
    ],
)
def test_check_range_accepts(size: int, offset: int, length: int | None, expected: int) -> None:
    assert check_range(size, offset, length) == expected


@pytest.mark.parametrize(
    "size, offset, length",
    [
        (0, 1, None),
        (0, 0, 1),
        (0, 1, 0),
        (10, 11, None),
        (10, 11, 0),
        (10, 0, 11),
        (10, 5, 6),
        (10, 10, 1),
        (10, MAX_UINT, MAX_UINT),
        (MAX_UINT, 1, MAX_UINT),
    ],
)
def test_check_range_refuses(size: int, offset: int, length: int | None) -> None:
    with pytest.raises(BadRequest):
        check_range(size, offset, length)


# --- error codes ------------------------------------------------------------------------------------------------------

EXPECTED_CLASSES: dict[ErrorCode, type[DfsError]] = {
    ErrorCode.SERVERS_UNAVAILABLE: ServersUnavailable,
    ErrorCode.NOT_FOUND: FileNotFound,
    ErrorCode.NAME_EXISTS: NameExists,
    ErrorCode.FILE_UNAVAILABLE: FileUnavailable,
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.PROTOCOL_ERROR: ProtocolError,
    ErrorCode.CHECKSUM_MISMATCH: ChecksumMismatch,
    ErrorCode.STORAGE_FULL: StorageFull,
    ErrorCode.NOT_AUTHORISED: NotAuthorised,
    ErrorCode.INTERNAL: InternalError,
    ErrorCode.NODE_ID_IN_USE: NodeIdInUse,
    ErrorCode.BUCKET_OWNED_BY_YOU: BucketOwnedByYou,
    ErrorCode.BUCKET_EXISTS: BucketExists,
    ErrorCode.BUCKET_NOT_EMPTY: BucketNotEmpty,
    ErrorCode.NO_SUCH_BUCKET: NoSuchBucket,
    ErrorCode.BUCKET_NOT_YOURS: BucketNotYours,
    ErrorCode.NO_SUCH_UPLOAD: NoSuchUpload,
    ErrorCode.INVALID_PART: InvalidPart,
}


def test_original_error_codes_keep_their_numbers() -> None:
    assert [int(code) for code in ErrorCode][:4] == [1, 2, 3, 4]
    assert ErrorCode.SERVERS_UNAVAILABLE == 1
    assert ErrorCode.NOT_FOUND == 2
    assert ErrorCode.NAME_EXISTS == 3
    assert ErrorCode.FILE_UNAVAILABLE == 4


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_error_from_wire_maps_every_code(code: ErrorCode) -> None:
    err = error_from_wire(int(code), "it went wrong")
    assert type(err) is EXPECTED_CLASSES[code]
    assert err.code == code
    assert err.message == "it went wrong"
    assert err.describe() == f"error {int(code)}: it went wrong"


def test_every_code_has_its_own_class() -> None:
    assert set(EXPECTED_CLASSES) == set(ErrorCode)
    assert len(set(EXPECTED_CLASSES.values())) == len(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_error_from_wire_with_empty_message_uses_the_title(code: ErrorCode) -> None:
    err = error_from_wire(int(code), "")
    assert err.message == EXPECTED_CLASSES[code].title


@pytest.mark.parametrize("code", [0, max(ErrorCode) + 1, 99, 2**40, -1])
def test_error_from_wire_unknown_code_is_internal_error(code: int) -> None:
    err = error_from_wire(code, "from the future")
    assert type(err) is InternalError
    assert err.code == ErrorCode.INTERNAL
    assert str(code) in err.message
    assert "from the future" in err.message


@pytest.mark.parametrize("cls", EXPECTED_CLASSES.values(), ids=lambda cls: cls.__name__)
def test_error_frame_round_trip(cls: type[DfsError]) -> None:
    (message,) = decode_frames(encode(Error.of(cls("details"))))
    assert isinstance(message, Error)
    err = error_from_wire(message.code, message.message)
    assert type(err) is cls
    assert err.message == "details"

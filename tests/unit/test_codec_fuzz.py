"""Property tests for the frame decoder.

Invariant: whatever bytes arrive, the decoder either yields valid messages or raises ProtocolError — never any other
exception — and never buffers a frame whose announced length is over the limit.

"Valid" means every field of every message has exactly the type the catalogue declares (an unsigned integer below
2**63 that is not a bool, bytes for bytes, ...). Frames are fed whole and one byte at a time, and the two must agree.
Hostile frames are built with the small CBOR encoder below, written from RFC 8949 and independent of both dfsd's
encoder and cbor2's, so that a bug shared by encoder and decoder cannot hide itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from comparable import normalise
from dfsd.protocol import CATALOGUE, MAX_FRAME_SIZE, FrameDecoder, Message, ProtocolError, encode
from dfsd.protocol.limits import MAX_UINT
from dfsd.protocol.messages import Buffer, Ok, Stored
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_LARGE = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SMALL = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- a minimal, independent CBOR encoder (RFC 8949) -------------------------------------------------------------------

WIDTHS = {0: 0, 24: 1, 25: 2, 26: 4, 27: 8}  # additional information -> number of argument bytes


def head(major: int, value: int, info: int | None = None) -> bytes:
    """An item head; ``info`` forces a (possibly non-minimal) argument width, as 24, 25, 26 or 27."""
    if info is None:
        info = 0 if value < 24 else 24 if value < 2**8 else 25 if value < 2**16 else 26 if value < 2**32 else 27
    if info == 0:
        return bytes([major << 5 | value])
    return bytes([major << 5 | info]) + value.to_bytes(WIDTHS[info], "big")


def c_int(value: int, info: int | None = None) -> bytes:
    return head(0, value, info) if value >= 0 else head(1, -1 - value, info)


def c_bytes(value: bytes) -> bytes:
    return head(2, len(value)) + value


def c_text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return head(3, len(raw)) + raw


def c_array(items: Iterable[bytes]) -> bytes:
    items = list(items)
    return head(4, len(items)) + b"".join(items)


def c_map(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    pairs = list(pairs)
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def c_tag(number: int, item: bytes) -> bytes:
    return head(6, number) + item


def c_float(value: float) -> bytes:
    return b"\xfb" + struct.pack(">d", value)


def c_float32(value: float) -> bytes:
    return b"\xfa" + struct.pack(">f", value)


def indefinite(major: int, chunks: Iterable[bytes]) -> bytes:
    return bytes([major << 5 | 31]) + b"".join(chunks) + b"\xff"


FALSE, TRUE, NULL, UNDEFINED = b"\xf4", b"\xf5", b"\xf6", b"\xf7"


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


# --- what a correct decoder yields ------------------------------------------------------------------------------------


class Opaque:
    """A decoded value the oracle does not model (a tag's result); any message holding one is unpredictable."""

    def __repr__(self) -> str:
        return "<opaque>"


class Other:
    """A decoded value no field accepts (undefined, a simple value)."""

    def __repr__(self) -> str:
        return "<other>"


OPAQUE, OTHER = Opaque(), Other()


@dataclasses.dataclass(frozen=True)
class Raw:
    """An already-encoded CBOR item and the value a correct decoder makes of it."""

    encoded: bytes
    value: Any


class Mismatch(Exception):
    """The value does not fit the field: the decoder must raise ProtocolError."""


class Unpredictable(Exception):
    """The oracle cannot tell what the decoder should do; only the invariant is checked."""


def hint_parts(hint: Any) -> tuple[str, Any]:
    """Classify a field's type hint: ("scalar", type), ("optional", inner), ("list", item), ("map", (key, value))
    or ("record", class)."""
    if hint in (int, float, str, bool, bytes):
        return "scalar", hint
    if hint == Buffer:
        return "scalar", bytes
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return "optional", inner
    if typing.get_origin(hint) is list:
        return "list", args[0]
    if typing.get_origin(hint) is dict:
        return "map", args
    if dataclasses.is_dataclass(hint):
        return "record", hint
    raise TypeError(f"no strategy for {hint!r}")


def fields_of(cls: Any) -> list[tuple[str, Any, bool]]:
    """(name, hint, required) for each field of a message or record class."""
    hints = typing.get_type_hints(cls)
    return [
        (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
    ]


def expect_value(hint: Any, value: Any) -> Any:
    """What the decoder must make of ``value`` in a field of type ``hint``, or raise Mismatch / Unpredictable."""
    if value is OPAQUE:
        raise Unpredictable
    kind, arg = hint_parts(hint)
    if kind == "optional":
        return None if value is None else expect_value(arg, value)
    if kind == "list":
        if type(value) is not list:
            raise Mismatch
        return [expect_value(arg, item) for item in value]
    if kind == "map":
        if type(value) is not dict:
            raise Mismatch
        return {expect_value(arg[0], key): expect_value(arg[1], item) for key, item in value.items()}
    if kind == "record":
        return expect_record(arg, value)
    if arg is int:
        if type(value) is int and 0 <= value <= MAX_UINT:
            return value
        raise Mismatch
    if arg is float:
        if type(value) is float and math.isfinite(value):
            return value
        if type(value) is int and abs(value) <= MAX_UINT:
            return float(value)
        raise Mismatch
    if type(value) is not arg:
        raise Mismatch
    return value


def expect_record(cls: Any, value: Any) -> Any:
    if type(value) is not dict:
        raise Mismatch
    kwargs = {}
    for name, hint, required in fields_of(cls):
        item = value.get(name)
        if item is None:
            if required:
                raise Mismatch
            continue
        kwargs[name] = expect_value(hint, item)
    return cls(**kwargs)


def expect_message(value: Any) -> Message:
    """The message a correct decoder returns for the decoded CBOR ``value``, or raise Mismatch / Unpredictable."""
    if type(value) is not dict:
        raise Mismatch
    kind = value.get("type")
    if kind is OPAQUE:
        raise Unpredictable
    if type(kind) is not str or kind not in CATALOGUE:
        raise Mismatch
    message: Message = expect_record(CATALOGUE[kind], value)
    return message


def contains_opaque(value: Any) -> bool:
    if value is OPAQUE:
        return True
    if isinstance(value, list):
        return any(contains_opaque(item) for item in value)
    if isinstance(value, dict):
        return any(contains_opaque(item) for item in value.values())
    return False


def is_valid(hint: Any, value: Any) -> bool:
    """True if ``value`` (a decoded message's field) has exactly the declared type."""
    kind, arg = hint_parts(hint)
    if kind == "optional":
        return value is None or is_valid(arg, value)
    if kind == "list":
        return type(value) is list and all(is_valid(arg, item) for item in value)
    if kind == "map":
        return type(value) is dict and all(is_valid(arg[0], k) and is_valid(arg[1], v) for k, v in value.items())
    if kind == "record":
        return type(value) is arg and all(is_valid(h, getattr(value, n)) for n, h, _ in fields_of(arg))
    if arg is int:
        return type(value) is int and 0 <= value <= MAX_UINT
    if arg is bytes:
        return isinstance(value, bytes | memoryview)
    return type(value) is arg


def check_valid_message(message: Message) -> None:
    assert type(message) in CATALOGUE.values(), f"not a catalogue message: {message!r}"
    for name, hint, _ in fields_of(type(message)):
        assert is_valid(hint, getattr(message, name)), f"{type(message).__name__}.{name} = {getattr(message, name)!r}"


# --- feeding a decoder while checking the invariant -------------------------------------------------------------------

ERROR = "ProtocolError"


class Feed:
    """A FrameDecoder plus a copy of every byte given to it, to check what it keeps buffered."""

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.decoder = FrameDecoder(max_frame_size)
        self.limit = max_frame_size
        self.stream = bytearray()

    def check_waiting_frame(self) -> None:
        """The frame the decoder waits to complete announces no more than the limit.

        Checked whenever the decoder takes bytes or says it needs more, so it never waits for (buffers) the body of an
        oversized frame. Right after it hands out a message, bytes that came in the same chunk may still begin with an
        oversized prefix: they are not waited for, and the next call must refuse them.
        """
        pending = self.stream[len(self.stream) - self.decoder.buffered :]
        if len(pending) >= 4:
            announced = int.from_bytes(pending[:4], "big")
            assert announced <= self.limit, f"waiting for a frame of {announced} bytes; the limit is {self.limit}"

    def outcomes(self, chunks: Iterable[bytes]) -> list[Any]:
        """The messages (normalised) and a final ERROR if a ProtocolError was raised; any other exception escapes."""
        seen: list[Any] = []
        try:
            for chunk in chunks:
                self.stream += chunk
                self.decoder.receive_data(chunk)
                self.check_waiting_frame()
                while (message := self.decoder.next_message()) is not None:
                    check_valid_message(message)
                    seen.append(normalise(message))
                self.check_waiting_frame()
        except ProtocolError:
            seen.append(ERROR)
            # Broken for good: the next call fails the same way, whatever arrives.
            with pytest.raises(ProtocolError):
                self.decoder.next_message()
            with pytest.raises(ProtocolError):
                self.decoder.receive_data(encode(Ok()))
        return seen


def whole(data: bytes, max_frame_size: int = MAX_FRAME_SIZE) -> list[Any]:
    return Feed(max_frame_size).outcomes([data])


def byte_by_byte(data: bytes, max_frame_size: int = MAX_FRAME_SIZE) -> list[Any]:
    return Feed(max_frame_size).outcomes(data[i : i + 1] for i in range(len(data)))


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- strategies: messages from their dataclass fields -----------------------------------------------------------------


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    kind, arg = hint_parts(hint)
    if kind == "optional":
        return st.none() | strategy_for(arg)
    if kind == "list":
        return st.lists(strategy_for(arg), max_size=3)
    if kind == "map":
        return st.dictionaries(strategy_for(arg[0]), strategy_for(arg[1]), max_size=3)
    if kind == "record":
        return st.builds(arg, **{name: strategy_for(h) for name, h, _ in fields_of(arg)})
    scalars: dict[type, st.SearchStrategy[Any]] = {
        int: st.integers(0, MAX_UINT),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: st.text(max_size=20),
        bool: st.booleans(),
        bytes: st.binary(max_size=40),
    }
    return scalars[arg]


MESSAGE_CLASSES = sorted(CATALOGUE.values(), key=lambda cls: cls.TYPE)
MESSAGE_STRATEGIES = {cls: strategy_for(cls) for cls in MESSAGE_CLASSES}
messages = st.sampled_from(MESSAGE_CLASSES).flatmap(lambda cls: MESSAGE_STRATEGIES[cls])


# --- strategies: CBOR items from the independent encoder --------------------------------------------------------------


@st.composite
def uints(draw: st.DrawFn, max_value: int = 2**64 - 1) -> Raw:
    """An unsigned integer with a minimal or needlessly wide head."""
    value = draw(st.integers(0, max_value) | st.sampled_from([0, 23, 24, 255, 256, 2**63 - 1, 2**63, 2**64 - 1]))
    value = min(value, max_value)
    widths = [info for info in (24, 25, 26, 27) if value < 1 << (8 * WIDTHS[info])]
    info = draw(st.sampled_from([None, *widths]))
    return Raw(c_int(value, info), value)


def chunked(draw: st.DrawFn, major: int, raw: bytes, cuts: list[int]) -> bytes:
    """A definite string, or an indefinite-length one in chunks cut at ``cuts``."""
    if not draw(st.booleans()):
        return head(major, len(raw)) + raw
    return indefinite(major, (head(major, len(piece)) + piece for piece in split_at(raw, cuts)))


@st.composite
def texts(draw: st.DrawFn, value: str | None = None) -> Raw:
    if value is None:
        value = draw(st.text(max_size=12))
    cuts = draw(st.lists(st.integers(0, len(value)), max_size=3))
    # Chunks of an indefinite text string must each be whole UTF-8, so cut between characters.
    raw_cuts = [len(value[:cut].encode("utf-8")) for cut in cuts]
    return Raw(chunked(draw, 3, value.encode("utf-8"), raw_cuts), value)


@st.composite
def byte_strings(draw: st.DrawFn, value: bytes | None = None) -> Raw:
    if value is None:
        value = draw(st.binary(max_size=12))
    cuts = draw(st.lists(st.integers(0, len(value)), max_size=3))
    return Raw(chunked(draw, 2, value, cuts), value)


@st.composite
def floats(draw: st.DrawFn, value: float | None = None) -> Raw:
    if value is None:
        value = draw(st.floats())
    if draw(st.booleans()) and fits_float32(value):
        return Raw(c_float32(value), value)
    return Raw(c_float(value), value)


def fits_float32(value: float) -> bool:
    if math.isnan(value):
        return True
    try:
        return bool(struct.unpack(">f", struct.pack(">f", value))[0] == value)
    except OverflowError:
        return False


SIMPLE = st.sampled_from(
    [
        Raw(FALSE, False),
        Raw(TRUE, True),
        Raw(NULL, None),
        Raw(UNDEFINED, OTHER),
        Raw(b"\xe0", OTHER),  # simple value 0
        Raw(b"\xf8\x20", OTHER),  # simple value 32, two-byte form
        Raw(b"\xf8\xff", OTHER),
    ]
)

INTERESTING_TAGS = [0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 100, 256, 258, 260, 261]


@st.composite
def tagged(draw: st.DrawFn, inner: st.SearchStrategy[Raw]) -> Raw:
    number = draw(st.sampled_from(INTERESTING_TAGS) | st.integers(0, 2**64 - 1) | st.just(55799))
    return Raw(c_tag(number, draw(inner).encoded), OPAQUE)


@st.composite
def arrays(draw: st.DrawFn, inner: st.SearchStrategy[Raw]) -> Raw:
    items = draw(st.lists(inner, max_size=4))
    encoded = [item.encoded for item in items]
    body = indefinite(4, encoded) if draw(st.booleans()) else c_array(encoded)
    return Raw(body, [item.value for item in items])


@st.composite
def maps(draw: st.DrawFn, inner: st.SearchStrategy[Raw]) -> Raw:
    entries = draw(st.dictionaries(st.text(max_size=6), inner, max_size=4))
    pairs = [(draw(texts(key)).encoded, item.encoded) for key, item in entries.items()]
    body = indefinite(5, (k + v for k, v in pairs)) if draw(st.booleans()) else c_map(pairs)
    return Raw(body, {key: item.value for key, item in entries.items()})


def nints() -> st.SearchStrategy[Raw]:
    return st.integers(-(2**64), -1).map(lambda n: Raw(c_int(n), n))


scalar_items = st.one_of(uints(), nints(), texts(), byte_strings(), floats(), SIMPLE)
any_items: st.SearchStrategy[Raw] = st.recursive(
    scalar_items,
    lambda inner: st.one_of(arrays(inner), maps(inner), tagged(inner)),
    max_leaves=12,
)


def encode_value(draw: st.DrawFn, value: Any) -> Raw:
    """A message value (as the catalogue types it) in one of the many CBOR encodings of it."""
    if isinstance(value, Raw):
        return value
    if value is None:
        return Raw(NULL, None)
    if isinstance(value, bool):
        return Raw(TRUE if value else FALSE, value)
    if isinstance(value, int):
        widths = [info for info in (24, 25, 26, 27) if value < 1 << (8 * WIDTHS[info])]
        return Raw(c_int(value, draw(st.sampled_from([None, *widths]))), value)
    if isinstance(value, float):
        return draw(floats(value))
    if isinstance(value, str):
        return draw(texts(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return draw(byte_strings(bytes(value)))
    if isinstance(value, list):
        items = [encode_value(draw, item) for item in value]
        encoded = [item.encoded for item in items]
        body = indefinite(4, encoded) if draw(st.booleans()) else c_array(encoded)
        return Raw(body, [item.value for item in items])
    if isinstance(value, dict):
        entries = [(key, encode_value(draw, item)) for key, item in value.items()]
        entries = draw(st.permutations(entries))
        pairs = [(draw(texts(key)).encoded, item.encoded) for key, item in entries]
        body = indefinite(5, (k + v for k, v in pairs)) if draw(st.booleans()) else c_map(pairs)
        return Raw(body, {key: item.value for key, item in entries})
    raise TypeError(f"cannot encode {value!r}")


def wire_value(obj: Any) -> Any:
    """A message or record as the map the protocol document describes: "type", then the fields that are not None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        wire: dict[str, Any] = {"type": obj.TYPE} if isinstance(obj, Message) else {}
        for f in dataclasses.fields(obj):
            if getattr(obj, f.name) is not None:
                wire[f.name] = wire_value(getattr(obj, f.name))
        return wire
    if isinstance(obj, list):
        return [wire_value(item) for item in obj]
    return obj


@st.composite
def damaged(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with some map entries dropped, set to null, replaced by arbitrary items, or added."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "recurse", "drop", "null", "replace"]))
            if action == "keep":
                out[key] = item
            elif action == "recurse":
                out[key] = draw(damaged(item, depth + 1))
            elif action == "null":
                out[key] = None
            elif action == "replace":
                out[key] = draw(any_items)
        extra = draw(st.dictionaries(st.text(max_size=8), any_items, max_size=2))
        out.update({key: item for key, item in extra.items() if key not in value})
        return out
    if isinstance(value, list) and value and depth < 3:
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], draw(damaged(value[index], depth + 1)), *value[index + 1 :]]
    return value


@st.composite
def hostile_bodies(draw: st.DrawFn) -> Raw:
    """A frame body: a message's map, often damaged, in arbitrary CBOR encodings; sometimes not a map at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(any_items)
    value = wire_value(draw(messages))
    if draw(st.booleans()):
        value = draw(damaged(value))
    if draw(st.integers(0, 9)) == 0:
        value["type"] = draw(st.sampled_from([*CATALOGUE, "", "OK", "nope"]) | st.text(max_size=8))
    return encode_value(draw, value)


# --- properties -------------------------------------------------------------------------------------------------------


@FUZZ
@given(message=messages)
def test_round_trip_of_generated_messages(message: Message) -> None:
    data = encode(message)
    expected = [normalise(message)]
    assert whole(data) == expected
    assert byte_by_byte(data) == expected


@FUZZ
@given(batch=st.lists(messages, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_round_trip_of_several_messages_split_anywhere(batch: list[Message], cuts: list[int]) -> None:
    data = b"".join(encode(message) for message in batch)
    expected = [normalise(message) for message in batch]
    assert Feed().outcomes(split_at(data, cuts)) == expected


@FUZZ
@given(data=st.binary(max_size=300), limit=st.sampled_from([0, 8, 64, 4096, MAX_FRAME_SIZE]))
def test_arbitrary_bytes_whole_and_one_byte_at_a_time_agree(data: bytes, limit: int) -> None:
    assert whole(data, limit) == byte_by_byte(data, limit)


@FUZZ
@given(bodies=st.lists(st.binary(max_size=60), min_size=1, max_size=4), limit=st.sampled_from([16, 64, MAX_FRAME_SIZE]))
def test_random_bodies_in_well_formed_frames(bodies: list[bytes], limit: int) -> None:
    data = b"".join(frame(body) for body in bodies)
    assert whole(data, limit) == byte_by_byte(data, limit)


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255))


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for action, where, byte in mutations:
        if action == "insert":
            out.insert(where % (len(out) + 1), byte)
        elif out:
            where %= len(out)
            if action == "flip":
                out[where] ^= byte or 0x80
            else:
                del out[where]
    return bytes(out)


@FUZZ
@given(batch=st.lists(messages, min_size=1, max_size=3), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_frames(batch: list[Message], mutations: list[tuple[str, int, int]]) -> None:
    data = mutate(b"".join(encode(message) for message in batch), mutations)
    assert whole(data) == byte_by_byte(data)


@FUZZ_SMALL
@example(batch=[Stored(5, bytes(32))], tail=b"\xff\xff\xff\xff")
@given(batch=st.lists(messages, min_size=1, max_size=3), tail=st.binary(min_size=4, max_size=12))
def test_valid_frames_then_junk_whole_and_one_byte_at_a_time_agree(batch: list[Message], tail: bytes) -> None:
    """Regression: a frame followed in the same chunk by an oversized prefix was decoded, then dropped."""
    data = b"".join(encode(message) for message in batch) + tail
    at_once = whole(data)
    assert at_once == byte_by_byte(data)
    assert at_once[: len(batch)] == [normalise(message) for message in batch]


@FUZZ_LARGE
@given(body=hostile_bodies())
def test_hostile_bodies_decode_as_an_independent_oracle_says(body: Raw) -> None:
    data = frame(body.encoded)
    outcome = whole(data)
    assert byte_by_byte(data) == outcome
    try:
        expected = [normalise(expect_message(body.value))]
    except Mismatch:
        expected = [ERROR]
    except Unpredictable:
        event("unpredictable")
        return
    if contains_opaque(body.value) and expected != [ERROR]:
        event("unpredictable")
        return  # a tag in an ignored key may still be one the decoder refuses
    event("refused" if expected == [ERROR] else "accepted")
    assert outcome == expected


# Items no decoder may accept wherever they sit: a frame holding one is a ProtocolError.
def invalid_utf8() -> st.SearchStrategy[bytes]:
    """Bytes that are not UTF-8: a sequence invalid in any context, between pieces of valid UTF-8."""
    bad = st.sampled_from(
        [b"\xff", b"\xfe", b"\xc3", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]
    )
    valid = st.text(max_size=4).map(lambda text: text.encode("utf-8"))
    return st.tuples(valid, bad, valid).map(b"".join)


@st.composite
def broken_items(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:  # text that is not UTF-8
        raw = draw(invalid_utf8())
        return head(3, len(raw)) + raw
    if kind == 1:  # an indefinite text string with a chunk that is not UTF-8
        raw = draw(invalid_utf8())
        return indefinite(3, [c_text("ok"), head(3, len(raw)) + raw])
    if kind == 2:  # a string or container announcing more than any frame can hold
        major = draw(st.integers(2, 5))
        return head(major, draw(st.integers(2**32, 2**64 - 1)))
    if kind == 3:  # reserved additional information 28-30
        return bytes([draw(st.integers(0, 7)) << 5 | draw(st.integers(28, 30))])
    if kind == 4:  # indefinite length where none is allowed (integers, tags)
        return bytes([draw(st.sampled_from([0, 1, 6])) << 5 | 31])
    if kind == 5:  # a break code outside any indefinite-length item
        return b"\xff"
    if kind == 6:  # an indefinite byte string holding something other than a definite byte string
        return indefinite(2, [c_bytes(b"ok"), draw(st.sampled_from([c_text("x"), c_int(1), indefinite(2, [])]))])
    return b"\xf8" + bytes([draw(st.integers(0, 31))])  # a two-byte simple value below 32


@FUZZ_LARGE
@given(
    message=messages,
    broken=broken_items(),
    where=st.sampled_from(["top", "field", "extra", "nested"]),
    data=st.data(),
)
def test_frames_holding_an_invalid_item_are_refused(message: Message, broken: bytes, where: str, data: Any) -> None:
    value = wire_value(message)
    if where == "top":
        body = broken
    else:
        item = Raw(broken, OPAQUE)
        if where == "field":
            value[next((key for key in value if key != "type"), "type")] = item
        elif where == "extra":
            value["zz-later"] = item
        else:
            value["zz-later"] = [[1, {"k": item}]]
        body = encode_value(data.draw, value).encoded
    assert whole(frame(body)) == [ERROR]
    assert byte_by_byte(frame(body)) == [ERROR]


DEPTH = 10_000


def nested(kind: str, depth: int, core: bytes = c_int(0)) -> bytes:
    openers: dict[str, Callable[[], tuple[bytes, bytes]]] = {
        "array": lambda: (b"\x81", b""),
        "indefinite-array": lambda: (b"\x9f", b"\xff"),
        "map": lambda: (b"\xa1" + c_text("k"), b""),
        "indefinite-map": lambda: (b"\xbf" + c_text("k"), b"\xff"),
        "tag": lambda: (c_tag(1000, b""), b""),
    }
    start, end = openers[kind]()
    return start * depth + core + end * depth


NESTINGS = ["array", "indefinite-array", "map", "indefinite-map", "tag"]


@pytest.mark.parametrize("kind", NESTINGS)
@pytest.mark.parametrize("where", ["top", "field", "list-field"])
def test_deep_nesting_is_refused(kind: str, where: str) -> None:
    deep = nested(kind, DEPTH)
    if where == "top":
        body = deep
    elif where == "field":
        body = c_map([(c_text("type"), c_text("hello")), (c_text("version"), deep), (c_text("role"), c_text("x"))])
    else:
        body = c_map([(c_text("type"), c_text("listing")), (c_text("files"), c_array([deep])), (c_text("more"), TRUE)])
    data = frame(body)
    assert whole(data) == [ERROR]
    assert byte_by_byte(data) == [ERROR]


@pytest.mark.parametrize("kind", NESTINGS)
def test_deep_nesting_in_an_ignored_key_is_handled(kind: str) -> None:
    """A correct decoder may accept or refuse a deep value in a key it ignores; it must not crash."""
    body = c_map([(c_text("type"), c_text("ok")), (c_text("later"), nested(kind, DEPTH))])
    outcome = whole(frame(body))
    assert outcome in ([normalise(Ok())], [ERROR])


@FUZZ_SMALL
@given(
    kind=st.sampled_from(NESTINGS),
    depth=st.integers(1, 2000),
    limit=st.sampled_from([64, MAX_FRAME_SIZE]),
)
def test_nesting_of_any_depth_never_crashes(kind: str, depth: int, limit: int) -> None:
    data = frame(c_map([(c_text("type"), c_text("ok")), (c_text("later"), nested(kind, depth))]))
    outcome = whole(data, limit)
    assert outcome in ([normalise(Ok())], [ERROR])
    if len(data) - 4 > limit:
        assert outcome == [ERROR]


@FUZZ
@given(
    batch=st.lists(messages, max_size=3),
    length=st.integers(MAX_FRAME_SIZE + 1, 2**32 - 1),
    junk=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 80), max_size=6),
)
def test_oversized_length_prefix_is_refused_when_its_fourth_byte_arrives(
    batch: list[Message], length: int, junk: bytes, cuts: list[int]
) -> None:
    feed = Feed()
    # The valid frames arrive first, each in its own chunk, and are all handed out.
    assert feed.outcomes(encode(message) for message in batch) == [normalise(message) for message in batch]
    tail = length.to_bytes(4, "big") + junk
    received = 0
    for chunk in split_at(tail, cuts):
        if received + len(chunk) < 4:
            feed.decoder.receive_data(chunk)
            assert feed.decoder.next_message() is None
            received += len(chunk)
            continue
        with pytest.raises(ProtocolError):
            feed.decoder.receive_data(chunk)
        break
    else:
        pytest.fail("the oversized prefix was never refused")
    with pytest.raises(ProtocolError):
        feed.decoder.next_message()

"""PROTOCOL.md section 11 says its bytes are those of a real exchange: this keeps that true (issue 10, item 6).

The real client talks to a real manager and storage node through a recording proxy, doing what 11.1 to 11.3 show; the
frames each side sent are cut out of the recording by their length prefixes. Every frame example in section 11 must be
one of them (11.5's, whose nonces are fixed for the example, must be what dfsd's encoder makes of those messages), and
its byte count, diagnostic notation and byte-by-byte breakdown must be what this file's own small CBOR reader makes of
its bytes; 11.4's two streams must be the recording, byte for byte. An open cluster's exchange holds no nonce; its one
time, the ``created`` of the manager's ``sending``, is replaced in the recording by EXAMPLE_TIME (which section 11 says
it shows), so the recording is the same on every run.

On a failure the message holds the text the document should have.
"""

from __future__ import annotations

import json
import re
import struct
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

from dfsd.protocol import FileNotFound, encode
from dfsd.protocol.handshake import client_proof, server_proof
from dfsd.protocol.messages import Auth, Hello, Ok, Welcome
from faultproxy import FaultProxy
from harness import LocalCluster

from dfsd.client import Client

PROTOCOL = Path(__file__).resolve().parents[2] / "PROTOCOL.md"
CONTENT = b"hello\n"
SECRET = b"example secret"  # 11.5's secret and fixed nonces
NONCE_CLIENT, NONCE_SERVER = b"\x01" * 32, b"\x02" * 32

# 2026-01-01 00:00:00 UTC, shown in section 11 for every time the real exchange holds (they differ on every run).
EXAMPLE_TIME = 1767225600.0
# A time field as dfsd sends it: its key, then a double-precision float (0xfb and 8 bytes).
TIME_FIELD = re.compile(rb"(\x67created\xfb).{8}", re.DOTALL)

EXAMPLE = re.compile(
    r"\*\*(?P<title>\d+\. [^*]+)\*\* — (?P<sender>\w+) → \w+, (?P<length>\d+) bytes[^\n]*\n\n"
    r"```\n(?P<hex>[0-9a-f]+)\n```\n\n"
    r"Diagnostic notation: `(?P<diagnostic>[^`]+)`[^\n]*\n\n"
    r"```\n(?P<breakdown>.*?)\n```",
    re.DOTALL,
)


async def _piped() -> AsyncIterator[bytes]:
    """A source of unknown size, like a pipe: dfsd's client streams it."""
    yield CONTENT


async def test_protocol_examples_are_a_real_exchange(bare_cluster: LocalCluster) -> None:
    bare_cluster.start_node(100)
    with FaultProxy(bare_cluster.address) as tap:
        tap.from_client, tap.from_server = bytearray(), bytearray()
        async with Client(tap.address) as client:
            await client.put("hello.txt", CONTENT)  # 11.1: small and of known size, so inline
            await client.put("piped.txt", _piped())  # 11.1: of unknown size, so streamed
            assert await client.read("hello.txt") == CONTENT  # 11.2
            try:
                await client.read("nope")  # 11.3
            except FileNotFound:
                pass
        from_client, from_server = bytes(tap.from_client), _fixed_times(bytes(tap.from_server))
    frames = {"client": _frames(from_client), "manager": _frames(from_server)}
    handshake = {
        "client": [encode(Hello(1, "client", "dfsd/0.1", NONCE_CLIENT)), encode(_auth())],
        "manager": [encode(_welcome()), encode(Ok())],
    }
    text = PROTOCOL.read_text()
    section = text[text.index("## 11. Worked examples") : text.index("## 12. Checklists")]
    authenticated = section.index("### 11.5")
    examples = list(EXAMPLE.finditer(section))
    assert len(examples) >= 14
    for example in examples:
        frame = bytes.fromhex(example["hex"])
        known = handshake if example.start() > authenticated else frames
        assert frame in known[example["sender"]], f"{example['title']} is not a frame the {example['sender']} sent"
        assert int(example["length"]) == len(frame), example["title"]
        assert example["diagnostic"] == diagnostic(frame), f"{example['title']}: should read\n{diagnostic(frame)}"
        assert example["breakdown"] == breakdown(frame), f"{example['title']}: should read\n{breakdown(frame)}"
    conversation = section[section.index("### 11.4") : authenticated]
    streams = re.findall(r"```\n([0-9a-f\n]+)\n```", conversation)
    assert streams == [_wrapped(from_client), _wrapped(from_server)], "11.4 should read\n" + "\n\n".join(
        [_wrapped(from_client), _wrapped(from_server)]
    )
    for proof in (server_proof(SECRET, NONCE_CLIENT, NONCE_SERVER), _auth().proof):
        assert f"`{proof.hex()}`" in section
    for role in ("node", "manager", "peer"):
        assert f"`{client_proof(SECRET, role, NONCE_CLIENT, NONCE_SERVER).hex()}`" in section


def _welcome() -> Welcome:
    return Welcome(1, "dfsd/0.1", NONCE_SERVER, server_proof(SECRET, NONCE_CLIENT, NONCE_SERVER))


def _auth() -> Auth:
    return Auth(client_proof(SECRET, "client", NONCE_CLIENT, NONCE_SERVER))


def _fixed_times(stream: bytes) -> bytes:
    """The stream with every time field set to EXAMPLE_TIME (the same number of bytes: frames keep their length)."""
    return TIME_FIELD.sub(lambda match: match[1] + struct.pack(">d", EXAMPLE_TIME), stream)


def _frames(stream: bytes) -> list[bytes]:
    frames = []
    while stream:
        end = 4 + int.from_bytes(stream[:4], "big")
        frames.append(stream[:end])
        stream = stream[end:]
    return frames


def _wrapped(stream: bytes) -> str:
    return "\n".join(textwrap.wrap(stream.hex(), 96))


# --- a small CBOR reader of its own, for the kinds of item these frames hold ------------------------------------------


def _head(body: bytes, at: int) -> tuple[int, int, int]:
    """(major type, argument, where the item's content starts)."""
    major, info = body[at] >> 5, body[at] & 31
    if info < 24:
        return major, info, at + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return major, int.from_bytes(body[at + 1 : at + 1 + size], "big"), at + 1 + size


def _item(body: bytes, at: int) -> tuple[object, int]:
    """The item at ``at`` (maps as lists of pairs, to keep their order) and where the next one starts."""
    major, argument, start = _head(body, at)
    if body[at] == 0xFB:
        return struct.unpack(">d", body[at + 1 : start])[0], start
    if major == 0:
        return argument, start
    if major in (2, 3):
        raw = body[start : start + argument]
        return (raw if major == 2 else raw.decode()), start + argument
    if major == 5:
        pairs = []
        for _ in range(argument):
            key, start = _item(body, start)
            value, start = _item(body, start)
            pairs.append((key, value))
        return pairs, start
    if major == 7 and argument in (20, 21):
        return argument == 21, start
    raise AssertionError(f"no example holds CBOR major type {major}")


def _diagnostic_of(value: object) -> str:
    if isinstance(value, list):
        return "{" + ", ".join(f"{_diagnostic_of(k)}: {_diagnostic_of(v)}" for k, v in value) + "}"
    if isinstance(value, bytes):
        if len(value) > 4 and len(set(value)) == 1:  # 32 bytes of 01: as the text around it says
            return f"h'{value[:2].hex()}…{value[:1].hex()}'"
        return f"h'{value.hex()}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def diagnostic(frame: bytes) -> str:
    """The frame's body in CBOR diagnostic notation (RFC 8949 section 8)."""
    return _diagnostic_of(_item(frame[4:], 0)[0])


def breakdown(frame: bytes) -> str:
    """The frame byte by byte: its bytes in hex on the left, what they are on the right."""
    lines = [(frame[:4].hex(" "), f"length prefix: {len(frame) - 4} bytes follow")]
    _describe(frame[4:], 0, 0, False, lines)
    column = max(len(hexes) for hexes, _ in lines) + 3
    return "\n".join(f"{hexes.ljust(column)}{what}".rstrip() for hexes, what in lines)


def _describe(body: bytes, at: int, depth: int, key: bool, lines: list[tuple[str, str]]) -> int:
    """Add the lines of the item at ``at``, described ``depth`` levels in; return where the next item starts."""
    major, argument, start = _head(body, at)
    indent = "  " * depth + ("key " if key else "")
    head = body[at:start].hex(" ")
    if major == 5:
        lines.append((head, f"{indent}map, {argument} pair{'s' if argument != 1 else ''}"))
        for _ in range(argument):
            start = _describe(body, start, depth + 1, True, lines)
            start = _describe(body, start, depth + 2, False, lines)
        return start
    if major == 0:
        lines.append((head, f"{indent}unsigned {argument}"))
        return start
    if body[at] == 0xFB:
        lines.append((head, f"{indent}float, double precision: {_item(body, at)[0]!r}"))
        return start
    if major == 7:
        lines.append((head, f"{indent}{'true' if argument == 21 else 'false'}"))
        return start
    raw = body[start : start + argument]
    kind, shown = ("text", json.dumps(raw.decode(), ensure_ascii=False)) if major == 3 else ("byte string", "")
    if major == 2:
        shown = f"h'{raw.hex()}'"
    if argument <= 16:
        lines.append((f"{head} {raw.hex(' ')}".strip(), f"{indent}{kind}, {argument} bytes: {shown}"))
        return start + argument
    lines.append((head, f"{indent}{kind}, {argument} bytes:" + (f" {shown}" if major == 3 else "")))
    for row in range(0, argument, 16):
        chunk = raw[row : row + 16]
        what = json.dumps(chunk.decode(), ensure_ascii=False) if major == 3 else f"(bytes {row}-{row + len(chunk) - 1})"
        lines.append(("   " + chunk.hex(" "), "  " * (depth + 2) + what))
    return start + argument

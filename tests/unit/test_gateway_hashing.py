"""A body's digests beside the loop (``bodies.PieceHashing``): every piece is hashed, in order, off the loop; a body
that comes whole is hashed on the loop; and at most two pieces wait for a hasher, whatever its speed. A body computes
the SHA-256 the upload sends (``CheckedBody.sha256``) with one hasher, a SIGNED payload's being the one that checks
its signature."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
from typing import Any

import pytest

from dfsd.client import ChecksumMismatch
from dfsd.gateway import checksums
from dfsd.gateway.errors import S3Error
from dfsd.gateway.server import bodies
from dfsd.gateway.server.bodies import PIECE_SIZE, CheckedBody, PieceHashing
from dfsd.gateway.server.http import HttpRequest
from dfsd.gateway.sigv4 import Authorised, PayloadMode


async def test_pieces_are_hashed_in_order_off_the_loop_by_every_hasher() -> None:
    pieces = [os.urandom(size) for size in (PIECE_SIZE, 1, 100_000, PIECE_SIZE, 7, 300_000)]
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    threads: set[int] = set()

    def update(piece: bytes) -> None:
        threads.add(threading.get_ident())
        md5.update(piece)

    hashing = PieceHashing([update, sha256.update])
    for index, piece in enumerate(pieces):
        await hashing.feed(piece, last=index == len(pieces) - 1)
    await hashing.flush()
    whole = b"".join(pieces)
    assert md5.digest() == hashlib.md5(whole).digest() and sha256.digest() == hashlib.sha256(whole).digest()
    assert threads and threading.get_ident() not in threads


async def test_a_body_that_comes_whole_is_hashed_on_the_loop() -> None:
    threads: list[int] = []
    hashing = PieceHashing([lambda piece: threads.append(threading.get_ident())])
    await hashing.feed(b"a small object", last=True)
    await hashing.flush()
    assert threads == [threading.get_ident()]


async def test_a_slow_hasher_holds_two_pieces_and_paces_the_body() -> None:
    """The hasher is stuck on the first piece: the second waits, held, until the hasher goes on; ``settle`` then
    waits for the pieces handed over."""
    entered, release = threading.Event(), threading.Event()
    hashed: list[bytes] = []

    def update(piece: bytes) -> None:
        entered.set()
        release.wait()
        hashed.append(piece[:1])

    hashing = PieceHashing([update])
    await hashing.feed(b"0" * PIECE_SIZE, last=False)
    await asyncio.to_thread(entered.wait)
    waiting = asyncio.create_task(hashing.feed(b"1" * PIECE_SIZE, last=False))
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done
    release.set()
    await waiting
    await hashing.flush()
    assert hashed[:2] == [b"0", b"1"]


def _request(payload: bytes, headers: dict[str, str] | None = None) -> HttpRequest:
    """A PUT whose body arrives in pieces of 300,000 bytes, as granian hands them over."""
    pieces = [payload[start : start + 300_000] for start in range(0, len(payload), 300_000)]

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("a body sends nothing")

    return HttpRequest(
        "PUT", "/b/k", "", [("content-length", str(len(payload))), *(headers or {}).items()], receive, send
    )


def _counting_sha256(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The SHA-256 hashers the gateway's body and checksum checks make from now on."""
    made: list[object] = []
    real = hashlib.sha256

    def sha256(*data: bytes) -> Any:
        made.append(hasher := real(*data))
        return hasher

    def new(name: str) -> Any:
        return sha256() if name == "sha256" else hashlib.new(name)

    fake = type("Hashlib", (), {"sha256": staticmethod(sha256), "md5": hashlib.md5, "new": staticmethod(new)})
    for module in (bodies, checksums):
        monkeypatch.setattr(module, "hashlib", fake)
    return made


PAYLOAD = os.urandom(3 * PIECE_SIZE + 17)
OTHER_SHA256 = hashlib.sha256(b"what was signed").digest()


@pytest.mark.parametrize(
    ("mode", "headers", "declared", "code"),
    [
        (PayloadMode.UNSIGNED, {}, None, None),
        (PayloadMode.SIGNED, {}, OTHER_SHA256, "XAmzContentSHA256Mismatch"),
        (
            PayloadMode.UNSIGNED,
            {"x-amz-checksum-sha256": base64.b64encode(OTHER_SHA256).decode()},
            OTHER_SHA256,
            "BadDigest",
        ),
    ],
    ids=["unsigned", "signed", "checksum-header"],
)
async def test_a_body_hashes_sha256_only_when_its_request_declares_none(
    monkeypatch: pytest.MonkeyPatch, mode: PayloadMode, headers: dict[str, str], declared: bytes | None, code: str
) -> None:
    """The SHA-256 a request declares (signed, or as x-amz-checksum-sha256) is the one the upload sends, unhashed
    here, right or wrong: the storage node hashes every upload and refuses a body that does not match, and that
    refusal is answered as the client's error (``mismatch``). A body that declares none is hashed once."""
    made = _counting_sha256(monkeypatch)
    signed = declared.hex() if mode is PayloadMode.SIGNED and declared is not None else None
    body = CheckedBody(_request(PAYLOAD, headers), Authorised("key", mode, signed, None, False), None)
    assert b"".join([piece async for piece in body]) == PAYLOAD
    assert body.md5 == hashlib.md5(PAYLOAD).digest()
    if declared is None:
        assert len(made) == 1 and body.sha256 == hashlib.sha256(PAYLOAD).digest() and body.declared_by is None
        return
    assert made == [] and body.sha256 == declared
    assert body.mismatch(ChecksumMismatch("checksum mismatch: the bytes received hash to ...")).code == code


async def test_a_client_gone_while_a_hasher_is_busy_waits_for_the_thread_and_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client vanishes while the MD5's thread is still on a piece: the body fails (IncompleteBody, so the upload
    never sends its end and nothing is kept) only once that thread has let go of the piece, and no thread is left
    hashing."""
    entered, release = threading.Event(), threading.Event()
    real_md5 = hashlib.md5

    class SlowMd5:
        def __init__(self) -> None:
            self._md5 = real_md5()

        def update(self, piece: bytes) -> None:
            entered.set()
            release.wait()
            self._md5.update(piece)

        def digest(self) -> bytes:
            return self._md5.digest()

    monkeypatch.setattr(bodies, "hashlib", type("Hashlib", (), {"sha256": hashlib.sha256, "md5": SlowMd5}))
    messages = [
        {"type": "http.request", "body": b"x" * PIECE_SIZE, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("a body sends nothing")

    request = HttpRequest("PUT", "/b/k", "", [("content-length", str(4 * PIECE_SIZE))], receive, send)
    body = CheckedBody(request, Authorised("key", PayloadMode.UNSIGNED, None, None, False), None)

    async def consume() -> None:
        async for _ in body:
            pass

    consuming = asyncio.create_task(consume())
    await asyncio.to_thread(entered.wait)
    done, _ = await asyncio.wait([consuming], timeout=0.2)
    assert not done  # the body waits for the thread on its way out
    release.set()
    with pytest.raises(S3Error) as raised:
        await consuming
    assert raised.value.code == "IncompleteBody" and body.md5 is None and body.sha256 is None

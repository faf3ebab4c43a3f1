"""A body's digests beside the loop (``bodies.PieceHashing``): every piece is hashed, in order, off the loop; a body
that comes whole is hashed on the loop; and at most two pieces wait for a hasher, whatever its speed. A body computes
the SHA-256 the upload sends (``CheckedBody.sha256``) with one hasher, a SIGNED payload's being the one that checks
its signature."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from typing import Any

import pytest

from dfsd.gateway import sigv4
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


def _request(payload: bytes) -> HttpRequest:
    """A PUT whose body arrives in pieces of 300,000 bytes, as granian hands them over."""
    pieces = [payload[start : start + 300_000] for start in range(0, len(payload), 300_000)]

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("a body sends nothing")

    headers = [("content-length", str(len(payload)))]
    return HttpRequest("PUT", "/b/k", "", headers, receive, send)


def _counting_sha256(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The SHA-256 hashers the gateway's body and signature checks make from now on."""
    made: list[object] = []
    real = hashlib.sha256

    def sha256(*data: bytes) -> Any:
        made.append(hasher := real(*data))
        return hasher

    for module in (bodies, sigv4):
        monkeypatch.setattr(module, "hashlib", type("Hashlib", (), {"sha256": sha256, "md5": hashlib.md5}))
    return made


@pytest.mark.parametrize("payload_mode", [PayloadMode.SIGNED, PayloadMode.UNSIGNED])
async def test_a_body_says_its_sha256_from_one_hasher(
    monkeypatch: pytest.MonkeyPatch, payload_mode: PayloadMode
) -> None:
    """A SIGNED payload's SHA-256 is hashed once, by the check of its signature, and that digest is the one the
    upload sends (``Client.put(..., sha256_after=...)``); an unsigned one gets a hasher of its own."""
    payload = os.urandom(3 * PIECE_SIZE + 17)
    signed = hashlib.sha256(payload).hexdigest() if payload_mode is PayloadMode.SIGNED else None
    made = _counting_sha256(monkeypatch)
    body = CheckedBody(_request(payload), Authorised("key", payload_mode, signed, None, False), None)
    assert b"".join([piece async for piece in body]) == payload
    assert len(made) == 1
    assert body.sha256 == hashlib.sha256(payload).digest() and body.md5 == hashlib.md5(payload).digest()


async def test_a_signed_body_that_differs_says_no_sha256() -> None:
    """The mismatch is raised before the body ends, so the upload never asks for the digest to send."""
    payload = os.urandom(PIECE_SIZE + 1)
    signed = hashlib.sha256(b"what was signed").hexdigest()
    body = CheckedBody(_request(payload), Authorised("key", PayloadMode.SIGNED, signed, None, False), None)
    with pytest.raises(S3Error) as raised:
        async for _ in body:
            pass
    assert raised.value.code == "XAmzContentSHA256Mismatch" and body.sha256 is None

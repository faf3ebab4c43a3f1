"""A body's digests beside the loop (``bodies.PieceHashing``): every piece is hashed, in order, off the loop; a body
that comes whole is hashed on the loop; and at most two pieces wait for a hasher, whatever its speed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

from dfsd.gateway.server.bodies import PIECE_SIZE, PieceHashing


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

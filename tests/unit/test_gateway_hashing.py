"""A body's digest in a worker thread (dfsd/gateway/server/hashing.py): every piece is hashed, in order; a body that
comes whole is hashed on the loop; and at most DEPTH pieces wait for the thread, whatever its speed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

from dfsd.gateway.server.hashing import DEPTH, HashThread


async def test_pieces_are_hashed_in_order_in_one_worker_thread() -> None:
    pieces = [os.urandom(size) for size in (1 << 20, 1, 100_000, 1 << 20, 7, 300_000)]
    md5 = hashlib.md5()
    threads: set[int] = set()

    def update(piece: bytes) -> None:
        threads.add(threading.get_ident())
        md5.update(piece)

    hashing = HashThread(update)
    for index, piece in enumerate(pieces):
        await hashing.feed(piece, last=index == len(pieces) - 1)
    await hashing.finish()
    assert md5.digest() == hashlib.md5(b"".join(pieces)).digest()
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_body_that_comes_whole_is_hashed_on_the_loop() -> None:
    threads: list[int] = []
    hashing = HashThread(lambda piece: threads.append(threading.get_ident()))
    await hashing.feed(b"a small object", last=True)
    await hashing.finish()
    assert threads == [threading.get_ident()]


async def test_a_slow_hash_holds_depth_pieces_and_paces_the_body() -> None:
    """The thread is stuck on the first piece: DEPTH pieces are taken, the next one waits until the thread goes on;
    ``close`` then lets the thread go without hashing what still waits."""
    entered, release = threading.Event(), threading.Event()
    hashed: list[bytes] = []

    def update(piece: bytes) -> None:
        entered.set()
        release.wait()
        hashed.append(piece)

    hashing = HashThread(update)
    for number in range(DEPTH):
        await hashing.feed(bytes([number]), last=False)
    await asyncio.to_thread(entered.wait)
    waiting = asyncio.create_task(hashing.feed(b"next", last=False))
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done
    release.set()
    await waiting
    hashing.close()
    assert hashed[0] == bytes([0]) and len(hashed) <= DEPTH + 1

"""The buffers a storage node reads large files into (``dfsd.storage.buffers``). Invariant: a buffer is never handed
out while a view of it lives (a frame of it may still wait in a transport), and is handed out again once none does."""

from __future__ import annotations

from dfsd.storage.buffers import ReadBuffers


def test_a_buffer_with_a_view_alive_is_not_handed_out_again() -> None:
    buffers = ReadBuffers(size=16, keep=4)
    first = buffers.take(2)
    views = [memoryview(buffer)[:8] for buffer in first]  # the frames being sent
    buffers.give(first)
    second = buffers.take(2)
    assert not any(fresh is old for fresh in second for old in first)
    del views
    buffers.give(second)
    third = buffers.take(4)
    assert sum(any(buffer is old for old in first + second) for buffer in third) == 4


def test_at_most_keep_buffers_are_kept() -> None:
    buffers = ReadBuffers(size=16, keep=2)
    taken = buffers.take(5)
    assert [len(buffer) for buffer in taken] == [16] * 5
    buffers.give(taken)
    again = buffers.take(5)
    assert sum(any(buffer is old for old in taken) for buffer in again) == 2


def test_a_buffer_taken_beside_an_equal_one_in_use_is_not_handed_out_twice_repro() -> None:
    """Two kept buffers with the same bytes (one chunk of a file, sent to two downloads at once): taking the free one
    removed the other from the kept ones (``list.remove`` compares bytes), so the free one was handed out again to the
    next download and read into while the first still sent it (4 concurrent GETs of one file: wrong bytes, 3 runs
    of 4)."""
    buffers = ReadBuffers(size=16, keep=4)
    busy, free = buffers.take(2)  # fresh: the same sixteen zero bytes
    buffers.give([busy, free])
    sending = memoryview(busy)  # a frame of it still waits in a transport
    (taken,) = buffers.take(1)
    assert taken is free
    del sending
    (again,) = buffers.take(1)
    assert again is not taken

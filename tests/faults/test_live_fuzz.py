"""A live fuzzer against running processes.

Invariant: whatever arrives on the manager's port or a storage node's data port — random bytes, mutated real frames,
huge length prefixes, frames cut short, peers that vanish — the processes stay up, a well-formed client working
alongside is never disturbed, memory comes back near where it started, and every file stored before is intact.
Bounded in count (FUZZ_INPUTS) and time (FUZZ_SECONDS).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
import time
from pathlib import Path

from dfsd.protocol import ProtocolError, decode_body, encode
from dfsd.protocol.messages import (
    Data,
    Delete,
    End,
    Fetch,
    Get,
    Hello,
    List,
    Put,
    Remove,
    Stat,
    Status,
    Store,
    Transfer,
    Verify,
)
from harness import LocalCluster

from dfsd.client import Client

FUZZ_INPUTS = 20_000
FUZZ_SECONDS = 60.0
CONCURRENCY = 40


def seeds(role: str) -> list[bytes]:
    """Real conversations to mutate; node seeds use file ids far above any real one, so mutations miss real data."""
    hello = encode(Hello(1, role, "fuzz"))
    if role == "client":
        requests = [
            Put("fuzz/a", 5),
            Data(b"12345"),
            End(hashlib.sha256(b"12345").digest()),
            Get("fuzz/a", 1, 2),
            Stat("fuzz/a"),
            List("fuzz/", None, 3),
            Status(),
            Delete("fuzz/a"),
        ]
    else:
        requests = [Store(10**12, 3), Data(b"abc"), End(), Fetch(10**12), Verify(10**12, b"\0" * 32)]
    frames = [encode(message) for message in requests]
    return [hello + b"".join(frames)] + [hello + frame for frame in frames]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        action = rng.randrange(6)
        position = rng.randrange(len(buffer) + 1)
        if action == 0 and buffer:  # flip a bit
            buffer[position % len(buffer)] ^= 1 << rng.randrange(8)
        elif action == 1:  # insert random bytes
            buffer[position:position] = rng.randbytes(rng.randint(1, 16))
        elif action == 2:  # delete a run
            del buffer[position : position + rng.randint(1, 16)]
        elif action == 3:  # truncate
            del buffer[position:]
        elif action == 4:  # an interesting integer
            value = rng.choice([0, 1, 23, 24, 255, 256, 65535, 2**31, 2**32 - 1])
            buffer[position:position] = struct.pack(">I", value)
        else:  # repeat a slice
            buffer[position:position] = buffer[position : position + rng.randint(1, 64)] * rng.randint(1, 4)
    return bytes(buffer)


def fuzz_input(role: str, rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 2000))
    if kind == 1:  # a huge length prefix after a valid hello
        return encode(Hello(1, role)) + struct.pack(">I", rng.randint(2**22 + 1, 2**32 - 1)) + rng.randbytes(64)
    if kind == 2:  # valid hello, then a frame of random bytes
        body = rng.randbytes(rng.randint(0, 300))
        return encode(Hello(1, role)) + struct.pack(">I", len(body)) + body
    return mutate(rng.choice(seeds(role)), rng)


def harmless(data: bytes) -> bool:
    """Skip node inputs that still decode into a remove or transfer: those are a manager's legitimate commands."""
    try:
        position = 0
        while position + 4 <= len(data):
            (length,) = struct.unpack_from(">I", data, position)
            body = data[position + 4 : position + 4 + length]
            position += 4 + length
            if len(body) == length and isinstance(decode_body(body), Remove | Transfer):
                return False
    except ProtocolError:
        pass
    return True


async def send_one(address: str, data: bytes, rng: random.Random) -> None:
    host, port = address.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        raise AssertionError(f"{address} stopped accepting connections") from None
    try:
        if rng.random() < 0.2:  # dribble it, byte groups at a time
            for start in range(0, len(data), 7):
                writer.write(data[start : start + 7])
                await writer.drain()
        else:
            writer.write(data)
            await writer.drain()
        if rng.random() < 0.5:
            writer.write_eof()
        async with asyncio.timeout(0.3):
            while await reader.read(65536):
                pass
    except (TimeoutError, OSError):
        pass
    finally:
        writer.transport.abort()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_live_fuzzing_disturbs_nothing(cluster: LocalCluster) -> None:
    rng = random.Random(20261124)
    stored = {f"keep/{index}": os.urandom(rng.randint(0, 300_000)) for index in range(20)}
    async with Client(cluster.address) as client:
        for name, payload in stored.items():
            await client.put(name, payload)
    node = cluster.nodes[100]
    assert cluster.manager is not None
    targets = [("client", cluster.address), ("manager", node.address)]
    before = {daemon.pid: rss(daemon.pid) for daemon in (cluster.manager, node)}

    errors: list[BaseException] = []
    good_rounds = 0
    stop = asyncio.Event()

    async def well_formed_client() -> None:
        nonlocal good_rounds
        async with Client(cluster.address) as client:
            while not stop.is_set():
                name = f"good/{good_rounds}"
                payload = os.urandom(1000)
                try:
                    await client.put(name, payload)
                    assert await client.read(name) == payload
                except BaseException as err:
                    errors.append(err)
                good_rounds += 1

    sent = 0
    limit = asyncio.Semaphore(CONCURRENCY)

    async def fuzz_once(role: str, address: str, data: bytes, seed: int) -> None:
        async with limit:
            await send_one(address, data, random.Random(seed))

    good = asyncio.ensure_future(well_formed_client())
    started = time.monotonic()
    async with asyncio.TaskGroup() as fuzzers:
        while sent < FUZZ_INPUTS and time.monotonic() - started < FUZZ_SECONDS:
            role, address = targets[sent % 2]
            data = fuzz_input(role, rng)
            if role == "manager" and not harmless(data):
                continue
            fuzzers.create_task(fuzz_once(role, address, data, rng.randrange(2**32)))
            sent += 1
            if sent % CONCURRENCY == 0:
                await asyncio.sleep(0)  # let the batch run
                while limit.locked():
                    await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    stop.set()
    await good

    assert errors == [], errors[:3]
    for log in cluster.root.glob("*.log"):
        assert "internal_error" not in log.read_text(), f"{log} logged an internal error"
    for daemon in (cluster.manager, *cluster.nodes.values()):
        assert daemon.process.poll() is None, f"{daemon.log} died"
    await asyncio.sleep(1.0)  # let dropped connections be cleaned up
    for pid, start in before.items():
        assert rss(pid) < start + 48 * 1024 * 1024, (pid, start, rss(pid))
    async with Client(cluster.address) as client:
        for name, payload in stored.items():
            assert await client.read(name) == payload
    print(f"\nlive fuzz: {sent} inputs in {elapsed:.1f} s; {good_rounds} well-formed round trips alongside, 0 errors")

"""dfs-bench's gateway rows: the same work through ``dfsd gateway`` (S3 over HTTP) as through the CBOR client, in
the same run, so the ratio says what the HTTP layer costs.

Theory of operation. A private gateway is started beside the cluster with a generated access key. The large file is
PUT and GET through it with one keep-alive HTTP/1.1 connection (UNSIGNED-PAYLOAD, as SDKs send over TLS), streamed
from and checked against the same on-the-fly pattern as the CBOR figures; the baseline is the CBOR client's own
upload and download of the same size in this run. Small objects (4 KiB) are PUT and GET by ``clients`` concurrent
keep-alive connections, every request signed (SigV4 with the body's SHA-256), against the CBOR client's rate for the
same files at the same concurrency, measured right before. The client here is a minimal HTTP/1.1 client on asyncio
streams and a SigV4 signer of its own (independent of the gateway's code), so the figures measure the gateway, not a
heavy client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from urllib.parse import quote

from dfsd.client import ChecksumMismatch, Client

from .bench_cluster import BenchFailed, Setup
from .bench_large import Pattern
from .bench_measure import MB, Figure, MiB, Plan, phase, run_workers
from .bench_small import payload
from .common import human_size

REGION = "us-east-1"
UNSIGNED = "UNSIGNED-PAYLOAD"

# The longest response head we read (status line and headers).
MAX_HEAD = 64 * 1024


class HttpFailed(BenchFailed):
    """The gateway answered with an unexpected status, or broke the connection."""


@functools.lru_cache(maxsize=8)
def signing_key(secret_key: str, date: str) -> bytes:
    """The day's SigV4 key: four chained HMACs that depend on nothing but the secret and the date, so derived once a
    day, as the SDKs that sign most requests do. Deriving it per request cost this client about as much CPU as the
    rest of the signing, on the two cores the gateway shares with it."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


@functools.lru_cache(maxsize=4)
def amz_date(second: int) -> str:
    """x-amz-date for a second since the epoch (formatted once a second, not per request)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))


def signed_headers(
    method: str, host: str, path: str, payload_hash: str, access_key: str, secret_key: str, extra: dict[str, str]
) -> dict[str, str]:
    """SigV4 Authorization and its companions for a request with no query (path already URI-encoded)."""
    stamp = amz_date(int(time.time()))
    date = stamp[:8]
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": stamp, **extra}
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, "", *(f"{name}:{headers[name].strip()}" for name in names), "", ";".join(names), payload_hash]
    )
    scope = f"{date}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.digest(signing_key(secret_key, date), to_sign.encode(), "sha256").hex()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


class HttpClient:
    """One keep-alive HTTP/1.1 connection to the gateway, signing every request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, keys: tuple[str, str]):
        self._reader, self._writer, self._host, self._keys = reader, writer, host, keys

    @classmethod
    async def open(cls, address: tuple[str, int], keys: tuple[str, str]) -> HttpClient:
        reader, writer = await asyncio.open_connection(*address, limit=MAX_HEAD)
        return cls(reader, writer, f"{address[0]}:{address[1]}", keys)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):  # the gateway may have closed it first
            await self._writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes | AsyncIterable[bytes] = b"", *, size: int | None = None
    ) -> tuple[int, int]:
        """Send a request (``body`` signed if bytes, else streamed UNSIGNED-PAYLOAD); return status and the answer's
        Content-Length, whose bytes ``body`` must then read (or ``skip``)."""
        path = quote(path, safe="/")
        payload_hash = hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else UNSIGNED
        length = len(body) if isinstance(body, bytes) else size
        headers = signed_headers(method, self._host, path, payload_hash, *self._keys, {})
        head = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), f"content-length: {length}"]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if isinstance(body, bytes):
            self._writer.write(body)
        else:
            async for chunk in body:
                self._writer.write(chunk)
                await self._writer.drain()
        await self._writer.drain()
        return await self._answer()

    async def _answer(self) -> tuple[int, int]:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            raise HttpFailed(f"the gateway closed the connection or sent a malformed answer ({err})") from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        return status, length

    async def body(self, length: int) -> AsyncIterator[bytes]:
        remaining = length
        while remaining:
            chunk = await self._reader.read(min(remaining, 1024 * 1024))
            if not chunk:
                raise HttpFailed("the gateway closed the connection mid-answer")
            remaining -= len(chunk)
            yield chunk

    async def read(self, length: int) -> bytes:
        """A small answer's body, whole, in one call (not through ``body``'s generator: this client's CPU is taken
        from the two cores the gateway shares with it)."""
        try:
            return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise HttpFailed("the gateway closed the connection mid-answer") from None

    async def expect(self, wanted: int, method: str, path: str, body: bytes = b"") -> bytes:
        """A request with a small answer, which must have status ``wanted``; returns the answer's body."""
        status, length = await self.request(method, path, body)
        answer = await self.read(length)
        if status != wanted:
            raise HttpFailed(f"{method} {path} answered {status}: {answer[:300]!r}")
        return answer


async def timed_put(client: HttpClient, path: str, chunks: AsyncIterable[bytes], size: int) -> float:
    started = time.perf_counter()
    status, length = await client.request("PUT", path, chunks, size=size)
    answer = await client.read(length)
    if status != 200:
        raise HttpFailed(f"PUT {path} answered {status}: {answer[:300]!r}")
    return time.perf_counter() - started


GATEWAY_SMALL_SIZE = 4096


@contextlib.asynccontextmanager
async def connections(setup: Setup, count: int) -> AsyncIterator[list[HttpClient]]:
    """``count`` keep-alive connections to the gateway, for one phase: opened right before it, because the gateway
    closes a connection that waits longer than its header-read timeout for the next request (granian's HTTP/1
    ``header_read_timeout``, 30 s by default) — less than a CBOR phase in between may take on a busy machine."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            client = await HttpClient.open(setup.gateway.host_port, setup.gateway_keys)
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


async def gateway_figures(plan: Plan, setup: Setup, figures: list[Figure], note: Callable[[str], None]) -> list[Figure]:
    """The large file and 4 KiB objects through the gateway, each against the CBOR client's figure of this run."""
    cbor = {figure.key: figure for figure in figures}
    pattern, size = Pattern(), plan.large_size
    async with connections(setup, 1) as [client]:
        await client.expect(200, "PUT", f"/{setup.bucket}")
        async with phase("the gateway upload", setup):
            setup.gateway.reset_peak_memory()
            up = await timed_put(client, f"/{setup.bucket}/large", pattern.chunks(size), size)
            up_memory = setup.gateway.peak_memory()
        async with phase("the gateway download", setup):
            setup.gateway.reset_peak_memory()
            check = pattern.checker(size, "the gateway")
            started = time.perf_counter()
            status, length = await client.request("GET", f"/{setup.bucket}/large")
            async for chunk in client.body(length):
                check.feed(chunk)
            check.finish()
            if status != 200:
                raise BenchFailed(f"the gateway answered a GET of the large file with {status}")
            down = time.perf_counter() - started
            down_memory = setup.gateway.peak_memory()
        await client.expect(204, "DELETE", f"/{setup.bucket}/large")
        note(f"gateway: upload {size / up / MB:.1f} MB/s, download {size / down / MB:.1f} MB/s")
        label = human_size(size)
        rates = {"upload": size / up / MB, "download": size / down / MB}
        # Issue 13 words its target against the commands (the ".vs_command" rows); those pay a process's start-up,
        # and dfs-cat -o writes and fsyncs its file, which this GET does not: the rows against the library are like
        # for like.
        result = [
            Figure(
                f"gateway.large.{direction}{suffix}",
                f"gateway {method} {label} vs {versus}",
                "MB/s",
                rates[direction],
                cbor[f"large.{measured}"].dfsd,
                True,
            )
            for direction, method, suffix, versus, measured in (
                ("upload", "PUT", "", "CBOR", "upload"),
                ("download", "GET", "", "CBOR", "download"),
                ("upload", "PUT", ".vs_command", "dfs-push", "push"),
                ("download", "GET", ".vs_command", "dfs-cat -o", "cat"),
            )
        ]
        for direction, peak in (("upload", up_memory), ("download", down_memory)):
            result.append(
                Figure(
                    f"gateway.large.{direction}.peak_memory",
                    f"gateway peak memory, {direction} (vs manager's)",
                    "MiB",
                    None if peak is None else peak / MiB,
                    cbor[f"large.{direction}.manager_peak_memory"].dfsd,
                    False,
                )
            )
    result += await gateway_small(plan, setup, note)
    async with connections(setup, 1) as [client]:
        await client.expect(204, "DELETE", f"/{setup.bucket}")
    return result


async def gateway_small(plan: Plan, setup: Setup, note: Callable[[str], None]) -> list[Figure]:
    """4 KiB objects written and read back by ``plan.clients`` connections: the CBOR client first, then the gateway."""
    size, tag = GATEWAY_SMALL_SIZE, "4KiB"
    base = os.urandom(size)
    order = list(range(plan.files))
    shares = [order[k :: plan.clients] for k in range(plan.clients)]
    cbor_names = [f"{setup.prefix}cbor-{tag}/{index:06d}" for index in order]

    async def cbor_write(client: Client, index: int) -> None:
        await client.put(cbor_names[index], payload(index, size, base))

    async def cbor_read(client: Client, index: int) -> None:
        if await client.read(cbor_names[index]) != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {cbor_names[index]} read back differs")

    async def http_write(client: HttpClient, index: int) -> None:
        await client.expect(200, "PUT", f"/{setup.bucket}/{tag}/{index:06d}", payload(index, size, base))

    async def http_read(client: HttpClient, index: int) -> None:
        if await client.expect(200, "GET", f"/{setup.bucket}/{tag}/{index:06d}") != payload(index, size, base):
            raise ChecksumMismatch(f"checksum mismatch: {tag}/{index:06d} read back through the gateway differs")

    figures: list[Figure] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(setup.address, setup.security)) for _ in range(plan.clients)]
        for what, cbor_request, http_request in (("write", cbor_write, http_write), ("read", cbor_read, http_read)):
            async with phase(f"the CBOR {tag} {what}s", setup):
                cbor_timings = await run_workers(clients, shares, cbor_request)
            async with connections(setup, plan.clients) as https, phase(f"the gateway {tag} {what}s", setup):
                http_timings = await run_workers(https, shares, http_request)
            note(f"{tag} {what}: CBOR {cbor_timings.rate:,.0f}/s, gateway {http_timings.rate:,.0f}/s")
            figures.append(
                Figure(
                    f"gateway.small.{tag}.{what}.rate",
                    f"gateway {tag} {what} vs CBOR",
                    "req/s",
                    http_timings.rate,
                    cbor_timings.rate,
                    True,
                )
            )
        async with connections(setup, 1) as [http]:
            for index in order:
                await clients[0].delete(cbor_names[index])
                await http.expect(204, "DELETE", f"/{setup.bucket}/{tag}/{index:06d}")
    return figures

"""A request body on its way into dfsd: decoded, counted and checked as it streams, never held whole.

``CheckedBody`` is the source handed to ``Client.put``. It decodes aws-chunked bodies (``chunked.AwsChunkedDecoder``),
computes the MD5 that becomes the ETag, counts the bytes against Content-Length, and checks an ``x-amz-checksum-*``
header if one came. Every check that can only be made at the end (Content-MD5, the last chunk's signature, the
checksum, the length) raises its ``S3Error`` *before* the iterator ends, so the client library never sends the
upload's end frame: the manager drops the partial file and nothing is kept. ``Md5Stream`` is the same for bytes copied
from another object (CopyObject, UploadPartCopy).

The SHA-256 that dfsd checks end to end (``sha256``, handed to the client library through
``put(..., sha256_after=...)``) is the one the request declares, when it declares one: a SIGNED payload's
``x-amz-content-sha256``, or ``x-amz-checksum-sha256`` as a header or an aws-chunked trailer. The storage node hashes
every upload and refuses one that does not match, keeping nothing, so the gateway need not hash the body with SHA-256
at all (0.5 s of CPU per GiB here): the node's refusal is answered as S3 answers a wrong declared hash
(``mismatch``: ``XAmzContentSHA256Mismatch`` or ``BadDigest``). The check then reaches from the client itself to the
node's disk. Only a body that declares no SHA-256 (UNSIGNED-PAYLOAD without one, or another checksum) is hashed here.

The body arrives from granian in pieces of at most its read buffer (``daemon.READ_BUFFER``, 1 MiB), smaller ones when
the client sends slowly or its TCP window is small; each piece passed on costs a data frame, a socket write and a call
into each hasher, so small pieces are joined into ``PIECE_SIZE`` ones first (a tenth less of the gateway's CPU per MiB,
measured with 64 KiB pieces), held at most ``HOLD_SECONDS``, so a slow client's bytes still reach the manager well
within its idle timeout. Each hasher of the bytes passed on (the MD5, the SHA-256 of a body that declares none, an
``x-amz-checksum-*``) runs in a worker thread, beside the loop (``PieceHashing``).

Measured with a thread per hasher four pieces deep (1 GiB PUTs, UNSIGNED-PAYLOAD, 14 A/B pairs at load 8-18 on 2
cores): the loop's thread spent 0.83-0.97 s of CPU per GiB instead of 1.99-2.21, the process 2.53-2.79 s instead of
2.35-2.66 (a hand-over costs about 40 ms per GiB of 1 MiB pieces; the MD5 took 1.3-1.4 s per GiB in its thread). So the
loop is no longer the upload's serial path: on a free core the MD5 runs beside it, and on a saturated machine the
upload costs about 5 % more CPU. (An earlier attempt saw no gain because it was measured with both cores busy, where
only the total CPU counts.)

The CPU of a 1 GiB PUT, in s per GiB, once the SHA-256 moved here from the client library (3 A/B pairs against the
version before, load 12-20 on 2 cores): UNSIGNED-PAYLOAD 2.67-2.85 (before 2.62-2.82; the loop's share 0.40-0.48, was
0.87-1.00: the work moved off the loop, the total stayed), STREAMING-AWS4-HMAC-SHA256-PAYLOAD 3.48-3.68 (3.55-3.64:
each byte is still hashed twice with SHA-256, once per chunk for its signature and once whole for dfsd),
STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 3.00-3.19 (3.05-3.18). (Measured and not kept: the hashers sharing one
thread, one hand-over a piece, and hand-overs of 2 or 4 pieces: the same CPU within the noise; 4 MiB ones raised the
RSS of four concurrent PUTs from 68 to 90 MiB.)

Once a declared SHA-256 went on unhashed (6 A/B pairs, load 1-10): SIGNED 1.91-2.16 (before 2.49-2.71),
x-amz-checksum-sha256 1.89-2.28 (3.03-3.29: it was hashed twice), UNSIGNED-PAYLOAD unchanged (2.46-2.67 against
2.46-2.69). Of an UNSIGNED PUT's 2.6, the worker threads take 1.85 (MD5 1.22, SHA-256 0.53, the rest hand-overs), the
loop 0.4 (mostly the kernel's: its socket writes to the manager, and the loopback's delivery of them) and granian's
threads 0.25 (reading the socket, and a copy of each piece). With the manager's 0.45-0.5, the node's 1.0-1.1 and the
HTTP client's 0.35-0.55, an UNSIGNED gateway PUT costs 4.4-4.8 s of CPU per GiB where dfs-push's costs 2.3-2.7, so on
two saturated cores the gateway moves about 0.55 of dfs-push's rate: 0.8 would need the whole path in about 3.0-3.4 s
per GiB, where the gateway's two digests and the node's and manager's share (which dfs-push pays too) already take
3.2.

Measured again per process (CPU s per GiB, 1 GiB, 3 A/B pairs at load 4-8): an UNSIGNED PUT costs the HTTP client
0.34-0.37, the gateway 2.60-2.72 (MD5 1.26 and SHA-256 0.53-0.58 of it, as hashlib takes them alone here), the
manager 0.49-0.52 and the node 1.01-1.07: 4.47-4.68 in all, against 2.3-2.6 for dfs-push (client 0.95-1.0, manager
0.4-0.45, node 1.0-1.05). (Measured and not kept: no SHA-256 in the gateway for a body that declares none, the node's
own digest recorded instead: the gateway 1.98-2.10, the whole PUT 3.71-3.95, or 0.62 of dfs-push's rate where the
CPU bounds it; but then nothing checks the bytes between the gateway and the node.) Even so, 0.8 of dfs-push is out
of reach on two cores: it needs the PUT within 2.3-2.6 / 0.8 = 2.9-3.25 s per GiB, of which the HTTP client, the
manager and the node take at least 1.75, leaving the gateway 1.15-1.5 s, where the MD5 the ETag needs takes 1.26,
granian's reading of the socket 0.25 and the loop's sending to the manager 0.4.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

from dfsd.bulk import ThreadedWriter
from dfsd.client import ChecksumMismatch
from dfsd.protocol import CHUNK_SIZE

from ..checksums import ALGORITHMS, ChecksumVerifier, algorithm_of_header, decode_checksum
from ..chunked import AwsChunkedDecoder
from ..errors import S3Error
from ..etags import check_content_md5
from ..sigv4 import Authorised
from .http import ClientGone, HttpRequest

# The header that declares a body's SHA-256 as one of S3's checksums (also as an aws-chunked trailer).
SHA256_CHECKSUM = "x-amz-checksum-sha256"

# The pieces passed on: the client library's data frames hold this much.
PIECE_SIZE = CHUNK_SIZE
# The longest bytes wait in the gateway for a piece to fill: far below any idle timeout, far above a fast client's
# time to send a piece.
HOLD_SECONDS = 0.5


class CheckedBody:
    """The payload of ``request`` as an async iterable of chunks; ``md5`` and ``sha256`` are its digests once it has
    ended (``sha256`` the one the request declared, if it did: ``declared_by``)."""

    def __init__(self, request: HttpRequest, auth: Authorised | None, content_md5: bytes | None) -> None:
        self._request = request
        self._content_md5 = content_md5
        self._decoder: AwsChunkedDecoder | None = None
        if auth is not None and auth.payload.is_chunked:
            decoded = request.header("x-amz-decoded-content-length")
            self._decoder = AwsChunkedDecoder(
                decoded_length=int(decoded) if decoded and decoded.isdigit() else None,
                signing=auth.chunk_signing,
                trailer=request.header("x-amz-trailer"),
                defer_sha256=True,
            )
        checksum = declared_checksum(request) if self._decoder is None else None
        # The SHA-256 the request declares for its body, if it does: the upload sends it on as its checksum, and the
        # storage node, which hashes every upload, refuses a body that does not match (``mismatch``).
        self.declared_by: str | None = None
        self._declared: bytes | None = None  # a trailer's comes at the end (``AwsChunkedDecoder.trailer_sha256``)
        if auth is not None and auth.content_sha256 is not None:
            self.declared_by, self._declared = "x-amz-content-sha256", bytes.fromhex(auth.content_sha256)
        elif checksum is not None and checksum[0] == "sha256":
            self.declared_by, self._declared = SHA256_CHECKSUM, decode_checksum(*checksum)
            checksum = None
        elif self._decoder is not None and self._decoder.defers_sha256:
            self.declared_by = SHA256_CHECKSUM
        self._checksum = (ChecksumVerifier(checksum[0]), checksum[1]) if checksum is not None else None
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if self.declared_by is None else None
        self.md5: bytes | None = None
        self.sha256: bytes | None = None
        # The hashers of the bytes passed on, each beside the loop in a worker thread. A SIGNED payload is never
        # aws-chunked, so its raw bytes are the ones passed on.
        updates: list[Callable[[bytes], object]] = [self._md5.update]
        if self._sha256 is not None:
            updates.append(self._sha256.update)
        if self._checksum is not None:
            updates.append(self._checksum[0].update)
        self._hashing = PieceHashing(updates)

    def mismatch(self, refused: ChecksumMismatch) -> S3Error:
        """What S3 answers when the storage node ``refused`` the body: it does not hash to the SHA-256 its request
        declared."""
        code = "XAmzContentSHA256Mismatch" if self.declared_by == "x-amz-content-sha256" else "BadDigest"
        said = f"The body does not hash to the SHA-256 that {self.declared_by} declared ({refused.message})"
        return S3Error(code, f"{said}; nothing was kept.")

    @property
    def size(self) -> int | None:
        """The payload's size, when the request says it."""
        if self._decoder is not None:
            decoded = self._request.header("x-amz-decoded-content-length")
            return int(decoded) if decoded and decoded.isdigit() else None
        return self._request.content_length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        expected = self._request.content_length
        received = 0
        gathered: list[bytes | memoryview] = []  # decoded bytes not yet passed on, fewer than PIECE_SIZE
        held = 0
        hold_until = 0.0
        try:
            async for raw in self._request.body():
                received += len(raw)
                for decoded in self._decoder.feed(raw) if self._decoder is not None else (raw,):
                    if not gathered:
                        hold_until = time.monotonic() + HOLD_SECONDS
                    gathered.append(decoded)
                    held += len(decoded)
                    if held >= PIECE_SIZE or time.monotonic() >= hold_until:
                        yield await self._passed_on(gathered, last=self._request.body_done)
                        gathered, held = [], 0
            if held:
                yield await self._passed_on(gathered, last=True)
            await self._hashing.flush()
        except ClientGone:
            raise S3Error("IncompleteBody", "The client went away before the body ended; nothing was kept.") from None
        finally:
            await self._hashing.settle()
        if expected is not None and received != expected:
            raise S3Error("IncompleteBody", f"The body held {received} bytes; Content-Length said {expected}.")
        if self._decoder is not None:
            self._decoder.close()
        if self._checksum is not None:
            verifier, announced = self._checksum
            verifier.verify(announced)
        digest = self._md5.digest()
        if self._content_md5 is not None:
            check_content_md5(self._content_md5, digest)
        self.md5 = digest
        self.sha256 = self._sha256.digest() if self._sha256 is not None else self._declared_sha256()

    def _declared_sha256(self) -> bytes:
        declared = self._decoder.trailer_sha256 if self._decoder is not None else self._declared
        assert declared is not None  # a decoder that defers its SHA-256 trailer has it once closed
        return declared

    async def _passed_on(self, pieces: list[bytes | memoryview], *, last: bool) -> bytes:
        """``pieces`` joined into the next piece to pass on, once it is handed to the hashers (``last``: the body
        has no more bytes after it, as far as is known now). A piece as it came from the server is passed on as it
        is; views of one (aws-chunked data) are joined, which copies each byte once."""
        piece = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)
        await self._hashing.feed(piece, last=last)
        return piece


class PieceHashing:
    """Pieces of a body fed to ``updates`` (hashers' ``update``), in order, each hasher in a worker thread a piece at
    a time (``bulk.ThreadedWriter``), so that at most two pieces wait for a hasher slower than the network; a body
    that comes whole (its first piece is its last) is hashed here, on the loop, where it costs less than a hand-over."""

    def __init__(self, updates: list[Callable[[bytes], object]]) -> None:
        self._updates = updates
        self._threads: list[ThreadedWriter] | None = None

    async def feed(self, piece: bytes, *, last: bool) -> None:
        """Hash ``piece`` after those fed before it; ``last``: no piece follows."""
        if self._threads is None:
            if last:
                for update in self._updates:
                    update(piece)
                return
            self._threads = [ThreadedWriter(update, batch_bytes=PIECE_SIZE) for update in self._updates]
        for thread in self._threads:
            await thread.write(piece)

    async def flush(self) -> None:
        """Return once every piece fed has been hashed."""
        for thread in self._threads or ():
            await thread.flush()

    async def settle(self) -> None:
        """Wait for the pieces in the threads, ignoring the outcome: the way out after a failure elsewhere."""
        for thread in self._threads or ():
            await thread.settle()


def declared_checksum(request: HttpRequest) -> tuple[str, str] | None:
    """The algorithm and value of the x-amz-checksum-* header of a body that is not aws-chunked, checked for form
    before any byte moves."""
    for name, value in request.headers:
        algorithm = algorithm_of_header(name)
        if algorithm is not None and algorithm in ALGORITHMS:
            decode_checksum(algorithm, value)
            return algorithm, value
    return None


class Md5Stream:
    """Bytes of ``source`` (a download being copied) passed on while their MD5 and SHA-256 are computed (in threads,
    unless they come in one piece): ``md5`` and ``sha256`` once all passed."""

    def __init__(self, source: AsyncIterable[bytes | memoryview], size: int) -> None:
        self._source = source
        self.size: int | None = size
        self.md5: bytes | None = None
        self.sha256: bytes | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        hashing = PieceHashing([md5.update, sha256.update])
        passed = 0
        try:
            async for chunk in self._source:
                piece = bytes(chunk)
                passed += len(piece)
                await hashing.feed(piece, last=passed == self.size)
                yield piece
            await hashing.flush()
        finally:
            await hashing.settle()
        self.md5, self.sha256 = md5.digest(), sha256.digest()

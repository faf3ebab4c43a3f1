"""A sans-I/O decoder for aws-chunked request bodies (``Content-Encoding: aws-chunked``).

Theory of operation. An aws-chunked body is a series of chunks, each ``hex-size[;chunk-signature=SIG]\\r\\n``, then
that many bytes, then ``\\r\\n``; a chunk of size 0 ends the data, and is followed by trailer lines
``name:value\\r\\n`` (none unless the request announced one in ``x-amz-trailer``) and an empty line. Two payload modes
use it:

- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: every chunk, the final empty one too, carries a signature over its bytes,
  chained from the previous chunk's signature; the first chunk chains from the request's own signature (the seed). A
  chunk that is altered, dropped, reordered or replayed breaks the chain: ``SignatureDoesNotMatch``.
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: chunks carry no signature; the trailer carries an ``x-amz-checksum-*`` of the
  whole payload, which is verified (``BadDigest``) — unless it is a SHA-256 and the caller has it checked further on
  (``defer_sha256``: the gateway sends it on as the upload's checksum, which the storage node verifies), then it is
  only handed out (``trailer_sha256``), so the payload is not hashed with SHA-256 twice.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: both; the trailer ends with ``x-amz-trailer-signature``, chained from
  the last chunk's signature over the trailer lines before it.

The decoder is fed whatever the socket produced (any split, down to one byte at a time) and returns the payload bytes
decoded so far, so it never holds more than one header line (``MAX_CHUNK_LINE``); chunk data passes straight through,
as views of the bytes fed, not copies (the gateway joins them into larger pieces anyway: copying each chunk out first
cost a second copy of every byte).
Payload bytes are handed out *before* their chunk's signature is checked (a chunk may be gigabytes), so the caller
must keep nothing until ``close`` has returned: any ``S3Error`` on the way means the upload failed as a whole.
``close`` is called at the end of the request body and raises ``IncompleteBody`` if the body stopped early.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

from dfsd.protocol.limits import MAX_UINT

from .checksums import ChecksumVerifier, algorithm_of_header, decode_checksum
from .errors import S3Error
from .sigv4 import ChunkSigning, sign

# The longest legitimate chunk header is 16 hex digits + ";chunk-signature=" + 64 hex digits = 97 bytes, and the
# longest trailer line a SHA-256 checksum at about 60; 1 KiB leaves room without letting a peer make us buffer more.
MAX_CHUNK_LINE = 1024

# Trailer lines after the last chunk: S3 sends one checksum (and, signed, one signature); more is an attack.
MAX_TRAILER_LINES = 8

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_CHUNK_HEADER = re.compile(rb"([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?\r\n")


class _State(enum.Enum):
    HEADER = "chunk header"
    DATA = "chunk data"
    DATA_END = "CRLF after chunk data"
    TRAILER = "trailer"
    DONE = "done"


class AwsChunkedDecoder:
    """Decodes one aws-chunked body; see the module docstring for the contract.

    ``signing`` (from ``sigv4.Authorised.chunk_signing``) makes every chunk signature required and checked; without
    it, chunks must carry none. ``trailer`` is the request's ``x-amz-trailer`` (e.g. ``x-amz-checksum-crc32``), the
    one trailer the body must end with; with ``signing`` too, it must be followed by ``x-amz-trailer-signature``.
    ``decoded_length`` is ``x-amz-decoded-content-length`` if the client sent it. ``defer_sha256``: a SHA-256 trailer
    is not checked here but handed out (``trailer_sha256``), for a caller that has it checked further on.
    """

    def __init__(
        self,
        *,
        decoded_length: int | None,
        signing: ChunkSigning | None = None,
        trailer: str | None = None,
        defer_sha256: bool = False,
    ) -> None:
        self._signing = signing
        self._previous_signature = signing.seed_signature if signing else ""
        self._expected_length = decoded_length
        self._trailer_name = trailer.strip().lower() if trailer else None
        self._checksum: ChecksumVerifier | None = None
        self.defers_sha256 = False  # the trailer is a SHA-256 that ``trailer_sha256`` hands out unchecked
        self.trailer_sha256: bytes | None = None  # that SHA-256, once the trailer has come
        if self._trailer_name is not None:
            algorithm = algorithm_of_header(self._trailer_name)
            if algorithm is None:
                raise S3Error("InvalidRequest", f"x-amz-trailer {trailer!r} is not an x-amz-checksum-* header.")
            self.defers_sha256 = defer_sha256 and algorithm == "sha256"
            self._checksum = None if self.defers_sha256 else ChecksumVerifier(algorithm)
        self._state = _State.HEADER
        self._line = bytearray()
        self._remaining = 0  # bytes left in the current chunk
        self._chunk_hash = hashlib.sha256()
        self._chunk_signature: str | None = None
        self._decoded = 0
        self._trailers: dict[str, str] = {}

    @property
    def done(self) -> bool:
        """The whole body, trailer included, has been decoded and verified."""
        return self._state is _State.DONE

    @property
    def decoded_length(self) -> int:
        """Payload bytes handed out so far."""
        return self._decoded

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Decode ``data``, the next bytes of the body; return the payload bytes it completed, in order, as views of
        ``data`` (change it afterwards and they change)."""
        view = memoryview(data).cast("B")
        out: list[memoryview] = []
        position = 0
        while position < len(view):
            if self._state is _State.DONE:
                raise S3Error("IncompleteBody", "The aws-chunked body goes on after its final chunk and trailer.")
            if self._state is _State.DATA:
                take = min(self._remaining, len(view) - position)
                piece = view[position : position + take]
                position += take
                self._take_data(piece)
                out.append(piece)
                continue
            # Look for the line's end only as far as the line may reach, so a large input is never copied whole.
            window = bytes(view[position : position + MAX_CHUNK_LINE - len(self._line) + 1])
            newline = window.find(b"\n")
            end = position + len(window) if newline < 0 else position + newline + 1
            if len(self._line) + (end - position) > MAX_CHUNK_LINE:
                raise S3Error(
                    "InvalidRequest", f"An aws-chunked {self._state.value} line is over {MAX_CHUNK_LINE} bytes."
                )
            self._line += view[position:end]
            position = end
            if newline >= 0:
                line = bytes(self._line)
                self._line.clear()
                self._take_line(line)
        return out

    def close(self) -> None:
        """The body has ended: raise ``IncompleteBody`` unless it was complete."""
        if self._state is not _State.DONE:
            raise S3Error(
                "IncompleteBody",
                f"The aws-chunked body ended in its {self._state.value} after {self._decoded} payload bytes.",
            )

    def _take_data(self, piece: memoryview) -> None:
        self._remaining -= len(piece)
        self._decoded += len(piece)
        if self._signing:
            self._chunk_hash.update(piece)
        if self._checksum:
            self._checksum.update(piece)
        if self._remaining == 0:
            self._check_chunk_signature()
            self._state = _State.DATA_END

    def _take_line(self, line: bytes) -> None:
        if self._state is _State.HEADER:
            self._take_chunk_header(line)
        elif self._state is _State.DATA_END:
            if line != b"\r\n":
                raise S3Error("InvalidRequest", "An aws-chunked chunk's data is not followed by CRLF.")
            self._state = _State.HEADER
        else:
            self._take_trailer_line(line)

    def _take_chunk_header(self, line: bytes) -> None:
        match = _CHUNK_HEADER.fullmatch(line)
        if match is None:
            raise S3Error("InvalidRequest", f"Malformed aws-chunked chunk header {line[:100]!r}.")
        size = int(match.group(1), 16)
        signature = match.group(2)
        if (signature is None) != (self._signing is None):
            which = "is missing its" if signature is None else "carries a"
            raise S3Error(
                "SignatureDoesNotMatch", f"An aws-chunked chunk {which} chunk-signature in this payload mode."
            )
        if size > MAX_UINT or (self._expected_length is not None and self._decoded + size > self._expected_length):
            raise S3Error(
                "IncompleteBody",
                f"The aws-chunked body holds more than x-amz-decoded-content-length ({self._expected_length}) bytes.",
            )
        self._chunk_signature = signature.decode("ascii") if signature else None
        self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size:
            self._state = _State.DATA
            return
        self._check_chunk_signature()
        if self._expected_length is not None and self._decoded != self._expected_length:
            raise S3Error(
                "IncompleteBody",
                f"The aws-chunked body held {self._decoded} bytes; x-amz-decoded-content-length said "
                f"{self._expected_length}.",
            )
        self._state = _State.TRAILER

    def _check_chunk_signature(self) -> None:
        if self._signing is None or self._chunk_signature is None:
            return
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._signing.amz_date,
                self._signing.scope,
                self._previous_signature,
                EMPTY_SHA256,
                self._chunk_hash.hexdigest(),
            ]
        )
        expected = sign(self._signing.signing_key, text)
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise S3Error(
                "SignatureDoesNotMatch",
                f"The signature of aws-chunked chunk ending at payload byte {self._decoded} does not match; "
                "a chunk was altered, reordered or lost.",
            )
        self._previous_signature = self._chunk_signature

    def _take_trailer_line(self, line: bytes) -> None:
        if line == b"\r\n":
            self._finish_trailer()
            return
        if len(self._trailers) >= MAX_TRAILER_LINES or not line.endswith(b"\r\n"):
            raise S3Error("InvalidRequest", "The aws-chunked trailer is malformed or too long.")
        name, sep, value = line[:-2].decode("latin-1").partition(":")
        name = name.strip().lower()
        expected = (self._trailer_name, TRAILER_SIGNATURE) if self._signing else (self._trailer_name,)
        if not sep or name not in expected or name in self._trailers:
            raise S3Error(
                "InvalidRequest",
                f"Unexpected aws-chunked trailer {name!r}; x-amz-trailer announced {self._trailer_name!r}.",
            )
        self._trailers[name] = value.strip()

    def _finish_trailer(self) -> None:
        if self._trailer_name is not None:
            value = self._trailers.get(self._trailer_name)
            if value is None:
                raise S3Error(
                    "InvalidRequest", f"The aws-chunked body lacks its announced {self._trailer_name} trailer."
                )
            if self._signing is not None:
                self._check_trailer_signature(f"{self._trailer_name}:{value}\n")
            if self._checksum is not None:
                self._checksum.verify(value)
            else:
                self.trailer_sha256 = decode_checksum("sha256", value)
        self._state = _State.DONE

    def _check_trailer_signature(self, canonical_trailer: str) -> None:
        assert self._signing is not None
        signature = self._trailers.get(TRAILER_SIGNATURE, "")
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                self._signing.amz_date,
                self._signing.scope,
                self._previous_signature,
                hashlib.sha256(canonical_trailer.encode("latin-1")).hexdigest(),
            ]
        )
        if not hmac.compare_digest(sign(self._signing.signing_key, text), signature):
            raise S3Error("SignatureDoesNotMatch", "The aws-chunked trailer's x-amz-trailer-signature does not match.")

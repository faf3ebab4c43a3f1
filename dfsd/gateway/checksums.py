"""The checksums S3 clients attach to uploads (``x-amz-checksum-crc32|crc32c|sha1|sha256``), computed as bytes stream.

Theory of operation. A client names one algorithm and sends the base64 of the big-endian digest, either as a request
header or as the trailer of an aws-chunked body (``chunked.py``). The server feeds every body byte to a
``ChecksumVerifier`` and calls ``verify`` once at the end; a mismatch is ``BadDigest`` and nothing may be kept. A value
that is not the base64 of a digest of the algorithm's size is ``InvalidDigest`` at once, before any byte moves.

CRC32 is zlib's. CRC32C (Castagnoli) is not in the standard library: ``google_crc32c`` (C, measured here at 13 GB/s)
is used when installed, and otherwise the table-driven version below, which is correct but does 10 MB/s; the gateway
must depend on google-crc32c before clients that choose CRC32C upload large objects through it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

from .errors import S3Error

CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"
ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the reflected Castagnoli polynomial
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c_table_driven(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``crc`` (0 to start), one table lookup per byte."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    import google_crc32c

    def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
        return int(google_crc32c.extend(crc, bytes(data)))

except ImportError:  # pragma: no cover - depends on what is installed
    crc32c = crc32c_table_driven


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview) -> None: ...
    def digest(self) -> bytes: ...


class _Crc:
    def __init__(self, function: Callable[[bytes | memoryview, int], int]) -> None:
        self._function = function
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self._crc = self._function(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


def new_hasher(algorithm: str) -> _Hasher:
    """A fresh hasher for ``algorithm`` (crc32, crc32c, sha1, sha256); another name is ``InvalidRequest``."""
    if algorithm == "crc32":
        return _Crc(zlib.crc32)
    if algorithm == "crc32c":
        return _Crc(crc32c)
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    raise S3Error("InvalidRequest", f"The checksum algorithm {algorithm!r} is not supported; use {ALGORITHMS}.")


_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32}


def algorithm_of_header(name: str) -> str | None:
    """``crc32`` for ``x-amz-checksum-crc32`` (any case); None if ``name`` is not a checksum header."""
    name = name.lower()
    return name[len(CHECKSUM_HEADER_PREFIX) :] if name.startswith(CHECKSUM_HEADER_PREFIX) else None


class ChecksumVerifier:
    """Computes ``algorithm`` over the bytes fed to ``update``; ``verify(expected_b64)`` raises BadDigest if unequal."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._hasher = new_hasher(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def b64digest(self) -> str:
        return base64.b64encode(self._hasher.digest()).decode("ascii")

    def verify(self, expected_b64: str) -> None:
        expected = decode_checksum(self.algorithm, expected_b64)
        actual = self._hasher.digest()
        if actual != expected:
            raise S3Error(
                "BadDigest",
                f"The {self.algorithm.upper()} you specified ({expected_b64}) did not match the calculated checksum "
                f"({self.b64digest()}); nothing was stored or changed.",
            )


def decode_checksum(algorithm: str, value_b64: str) -> bytes:
    """The digest in a checksum header value, or ``InvalidDigest`` if it is not base64 of the right size."""
    try:
        digest = base64.b64decode(value_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest", f"The x-amz-checksum-{algorithm} value {value_b64!r} is not base64.") from None
    if len(digest) != _DIGEST_SIZES[algorithm]:
        raise S3Error(
            "InvalidDigest",
            f"A {algorithm.upper()} is {_DIGEST_SIZES[algorithm]} bytes; {value_b64!r} is {len(digest)}.",
        )
    return digest

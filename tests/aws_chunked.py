"""An aws-chunked encoder of the tests' own, written from AWS's documentation and checked against AWS's published
signatures (tests/unit/test_gateway_chunked.py), independent of the gateway's signing code: the unit tests feed its
bodies to the decoder, the gateway's process tests send them over HTTP."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]


# --- an independent encoder -------------------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def aws_signing_key(secret: str = AWS_SECRET, date: str = "20130524", region: str = "us-east-1") -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), "s3"), "aws4_request")


def chunk_signatures(
    chunks: list[bytes], key: bytes, seed: str, date: str = AWS_DATE, scope: str = AWS_SCOPE
) -> list[str]:
    """The signature of each chunk (the empty last one included), chained from ``seed`` as AWS documents it."""
    signatures, previous = [], seed
    for chunk in chunks:
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                date,
                scope,
                previous,
                hashlib.sha256(b"").hexdigest(),
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        signatures.append(previous)
    return signatures


def encode_signed(chunks: list[bytes], signatures: list[str]) -> bytes:
    return b"".join(
        b"%x;chunk-signature=%s\r\n%s\r\n" % (len(c), s.encode(), c) for c, s in zip(chunks, signatures, strict=True)
    )


def encode_unsigned(chunks: Iterable[bytes], trailer: tuple[str, str] | None) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk) + b"0\r\n"
    if trailer:
        body += f"{trailer[0]}:{trailer[1]}\r\n".encode()
    return body + b"\r\n"


def split(payload: bytes, sizes: list[int]) -> list[bytes]:
    """``payload`` cut into chunks of the given sizes (cycled), then the empty final chunk."""
    chunks, position, index = [], 0, 0
    while position < len(payload):
        size = max(1, sizes[index % len(sizes)])
        chunks.append(payload[position : position + size])
        position += size
        index += 1
    return [*chunks, b""]

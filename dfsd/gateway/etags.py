"""ETags and Content-MD5, as S3 computes and checks them.

Theory of operation. A single-part object's ETag is the hex MD5 of its bytes, in double quotes. A multipart object's
is the MD5 of the parts' binary MD5s concatenated in part order, then ``-`` and the number of parts, so clients can
recognise it and never compare it with their own MD5 of the whole. ``Content-MD5`` is the base64 of the body's binary
MD5: a value that is not 16 bytes of base64 is ``InvalidDigest`` before any byte moves, a body that does not match it
is ``BadDigest`` after the last byte (and nothing is kept).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from .errors import S3Error


def md5_etag(md5: bytes) -> str:
    """The ETag of a single-part object whose binary MD5 is ``md5``."""
    return f'"{md5.hex()}"'


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """The ETag of an object completed from parts with these binary MD5s, in part order."""
    return f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{len(part_md5s)}"'


def unquote_etag(etag: str) -> str:
    """An ETag as clients send it back (quoted or not, maybe weak ``W/``) reduced to its bare value."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def parse_content_md5(value: str) -> bytes:
    """The 16-byte digest in a Content-MD5 header, or ``InvalidDigest``."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest", f"Content-MD5 {value!r} is not the base64 of a 16-byte MD5.")
    return digest


def check_content_md5(expected: bytes, actual: bytes) -> None:
    """``BadDigest`` unless the body's MD5 (``actual``) is what Content-MD5 announced."""
    if expected != actual:
        raise S3Error(
            "BadDigest",
            f"The Content-MD5 you specified ({base64.b64encode(expected).decode()}) did not match what we received "
            f"({base64.b64encode(actual).decode()}); nothing was stored or changed.",
        )

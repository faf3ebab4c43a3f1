"""The headers S3 stores with an object and returns as sent, as plain values: gathered from a PUT, given back on GET.

Theory of operation. PutObject, CopyObject (REPLACE) and CreateMultipartUpload carry an object's metadata in headers:
Content-Type, Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires and any number of
``x-amz-meta-*``. ``object_metadata`` picks them out as a ``dict`` of lower-case names to values, which is what the
manager keeps with the object; ``response_headers`` turns it back into the headers of a GET or HEAD. The ETag, when
known before the upload, travels in the same map (``ETAG_KEY``). User metadata is limited as S3 limits it (2 KiB of
names and values), so a client cannot make every record of a bucket large.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import S3Error

STORED_HEADERS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
)
USER_PREFIX = "x-amz-meta-"

# S3's limit on user metadata: names (without the prefix) and values together, in bytes of UTF-8.
MAX_USER_METADATA = 2 * 1024

DEFAULT_CONTENT_TYPE = "binary/octet-stream"

# The object's ETag (quoted), kept beside the headers when it is known before the bytes are stored: from Content-MD5,
# or a completed multipart upload's. Never a header of its own: GET and HEAD answer it as ETag.
ETAG_KEY = "etag"


def object_metadata(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The metadata a request's headers give an object; ``MetadataTooLarge`` past S3's 2 KiB of user metadata."""
    meta: dict[str, str] = {}
    user_bytes = 0
    for name, value in headers:
        name = name.lower()
        if name in STORED_HEADERS:
            meta[name] = value
        elif name.startswith(USER_PREFIX) and len(name) > len(USER_PREFIX):
            user_bytes += len(name[len(USER_PREFIX) :].encode()) + len(value.encode())
            meta[name] = f"{meta[name]},{value}" if name in meta else value
    if user_bytes > MAX_USER_METADATA:
        raise S3Error(
            "MetadataTooLarge", f"The x-amz-meta-* headers hold {user_bytes} bytes; at most {MAX_USER_METADATA}."
        )
    return meta


def response_headers(meta: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers a GET or HEAD answers for an object with ``meta`` (Content-Type defaults as S3's does)."""
    headers = [(name, value) for name, value in meta.items() if name in STORED_HEADERS or name.startswith(USER_PREFIX)]
    if "content-type" not in meta:
        headers.append(("content-type", DEFAULT_CONTENT_TYPE))
    return headers

"""S3 names: which bucket names and keys are valid, how a request's path or Host names them, and the dfsd name each
object has.

Theory of operation. One namespace: object ``key`` in bucket ``b`` is the dfsd file named ``b/key``, so the CBOR tools
see what S3 clients store (``dfs-ls b/``) and S3 lists what ``dfs-push`` stored under ``b/``. Bucket names cannot hold
``/`` (S3's rules below), so the first ``/`` of a dfsd name always splits it back into bucket and key; a dfsd name
with no ``/`` (or whose first part is not a valid bucket name) belongs to no bucket and S3 never shows it.

Keys are opaque strings, as in S3: ``..``, ``.``, ``//`` and a leading ``/`` are ordinary characters, because dfsd
stores every file by the manager's file id and no key ever becomes a path. Two things are refused: NUL (dfsd names
refuse it, since C tools and SQLite bindings cut a string there) and bytes that are not UTF-8 (S3 keys are UTF-8).

Limits: a key is at most 1024 bytes of UTF-8 and a bucket name at most 63 characters, so a dfsd name is at most
``MAX_OBJECT_NAME_BYTES`` = 1088 bytes, which is ``dfsd.protocol.limits.MAX_NAME_BYTES``: every S3 key fits. A manager
run with a lower ``--max-name-bytes`` refuses longer names itself.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from dfsd.protocol.limits import MAX_NAME_BYTES

from .errors import S3Error

MAX_KEY_BYTES = 1024  # S3's limit on a key, in bytes of UTF-8
MIN_BUCKET_NAME = 3
MAX_BUCKET_NAME = 63
SEPARATOR = "/"

# The longest dfsd name an S3 object can need: the longest bucket name, the separator, the longest key.
MAX_OBJECT_NAME_BYTES = MAX_BUCKET_NAME + len(SEPARATOR) + MAX_KEY_BYTES

_BUCKET_CHARACTERS = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
# Prefixes and suffixes S3 reserves for its own features; refusing them keeps names portable to AWS and back.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


# Every S3 request checks its bucket's name, and a gateway serves few buckets: the names that pass are kept (a refusal
# raises, so it is not), which saves the rules' regular expression and IP address parse on each request.
@lru_cache(maxsize=1024)
def check_bucket_name(name: str) -> str:
    """Return ``name`` if S3's bucket naming rules allow it, else raise ``InvalidBucketName`` saying which rule."""

    def refuse(reason: str) -> S3Error:
        return S3Error("InvalidBucketName", f"The bucket name {name!r} is not valid: {reason}.")

    if not MIN_BUCKET_NAME <= len(name) <= MAX_BUCKET_NAME:
        raise refuse(f"it must be {MIN_BUCKET_NAME} to {MAX_BUCKET_NAME} characters long")
    if not _BUCKET_CHARACTERS.fullmatch(name):
        raise refuse("use lower-case letters, digits, '.' and '-', beginning and ending with a letter or digit")
    if ".." in name:
        raise refuse("it must not hold two adjacent periods")
    if _is_ip_address(name):
        raise refuse("it must not look like an IP address")
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        raise refuse("it begins or ends with a form S3 reserves")
    return name


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise (KeyTooLongError, InvalidArgument)."""
    if not key:
        raise S3Error("InvalidArgument", "The object key is empty.")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "The object key is not valid UTF-8.") from None
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"The key is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}.")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "The object key holds a NUL character, which dfsd names cannot hold.")
    return key


def decode_component(raw: str) -> str:
    """A percent-encoded path component as text; bytes that are not UTF-8 are ``InvalidURI``."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "The request path is not valid UTF-8 once percent-decoded.") from None


def parse_path_style(raw_path: str) -> tuple[str | None, str | None]:
    """(bucket, key) from a path-style request path as sent (``/bucket/key``, still percent-encoded).

    ``/`` names neither; ``/bucket`` and ``/bucket/`` name the bucket only. The key is everything after the first
    ``/`` following the bucket, verbatim (``/b//x`` is key ``/x``). Names are decoded, not yet checked.
    """
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    if not path:
        return None, None
    bucket, separator, key = path.partition("/")
    return decode_component(bucket), (decode_component(key) if separator and key else None)


def virtual_host_bucket(host: str, domain: str) -> str | None:
    """The bucket a virtual-host-style ``Host`` names (``bucket.DOMAIN[:port]``), or None if it names none."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    suffix = "." + domain.lower().strip(".")
    name = name.lower()
    return name[: -len(suffix)] or None if name.endswith(suffix) else None


def dfs_name(bucket: str, key: str) -> str:
    """The dfsd file name of an object; refuses (KeyTooLongError) one longer than the protocol's name limit."""
    name = f"{bucket}{SEPARATOR}{key}"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise S3Error(
            "KeyTooLongError",
            f"Bucket and key together are {size} bytes; this cluster's names hold at most {MAX_NAME_BYTES}.",
        )
    return name


def dfs_prefix(bucket: str, prefix: str = "") -> str:
    """The dfsd name prefix under which a bucket's objects (with ``prefix``) are listed."""
    return f"{bucket}{SEPARATOR}{prefix}"


def split_dfs_name(name: str) -> tuple[str, str] | None:
    """(bucket, key) of a dfsd name, or None if the name belongs to no bucket."""
    bucket, separator, key = name.partition(SEPARATOR)
    if not separator or not key:
        return None
    try:
        check_bucket_name(bucket)
    except S3Error:
        return None
    return bucket, key

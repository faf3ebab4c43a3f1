"""AWS Signature Version 4 verification for S3 requests, with no I/O and no clock of its own.

Theory of operation. A client signs a request by building a *canonical request* (method, URI, query, the headers it
names in SignedHeaders, and a payload hash), hashing it into a *string to sign* with the date and the credential scope
(``date/region/s3/aws4_request``), and computing an HMAC-SHA256 of that with a key derived from its secret and the same
scope. The server rebuilds the same canonical request from what arrived, derives the same key from its copy of the
secret, and compares the two signatures in constant time. The signature comes either in the ``Authorization``
header or in the query string of a presigned URL (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``); ``verify`` handles both and returns an
``Authorised`` that says who signed and how the body is to be checked.

The payload hash (``x-amz-content-sha256``) decides that: 64 hex digits mean the body must hash to them (the gateway
sends them on as the upload's SHA-256, which the storage node checks: on mismatch nothing is kept,
``XAmzContentSHA256Mismatch``); ``UNSIGNED-PAYLOAD`` means the
body is not signed; the ``STREAMING-*`` values mean the body is aws-chunked (``chunked.py`` decodes it; the signed
ones carry a signature per chunk, chained from this request's signature, the *seed*).

Canonicalisation follows S3's rules, which differ from other services: the path is not normalised (``a//b/../c`` is a
key, not a path) and is URI-encoded exactly once, so the raw path is percent-decoded to bytes and encoded again with
AWS's unreserved set, which makes ``%7E`` and ``~`` sign alike without ever encoding a ``%`` twice. Query names and
values are decoded and re-encoded the same way, then sorted by name and value. Header values are trimmed and their
inner runs of whitespace folded to one space; repeated headers are joined with commas.

Time comes in as ``now`` (seconds since the epoch), so tests can sign in 2013 with AWS's published examples. The
signing key depends only on secret, date, region and service, so it is cached (it changes once a day per user).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from .errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"

# AWS refuses a request whose date is more than 15 minutes from its own clock: long enough for honest clock drift,
# short enough that a captured request cannot be replayed much later.
MAX_CLOCK_SKEW = 15 * 60

# A presigned URL lives at most seven days (AWS's limit, which clients also enforce).
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

# Signing keys cached: one per (user, day, region) in use; a few hundred covers every realistic deployment.
SIGNING_KEY_CACHE = 256

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_CREDENTIAL_DATE = re.compile(r"\d{8}")
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# A raw path that canonicalises to itself: AWS's unreserved characters and '/', not empty.
_CANONICAL_AS_IS = re.compile(r"[A-Za-z0-9\-._~/]+")

# Credential and SignedHeaders values parsed, kept by their text: a client sends the same ones on every request of a day
# (the signature and the time are what change), and parsing them was a fifth of verifying a small GET.
PARSED_CACHE = 256


class PayloadMode(enum.Enum):
    """How the request body is protected, from ``x-amz-content-sha256``."""

    SIGNED = "sha256"  # the header holds the body's hex SHA-256
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def is_chunked(self) -> bool:
        """The body is aws-chunked and must go through ``chunked.AwsChunkedDecoder``."""
        return self.value.startswith("STREAMING-")

    @property
    def is_chunk_signed(self) -> bool:
        """Every aws-chunked chunk (and the trailer, if any) carries a signature chained from the seed."""
        return self in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)


@dataclass(frozen=True)
class SignedRequest:
    """What verification needs of an HTTP request, as it arrived.

    ``path`` is the request target's path still percent-encoded, ``query`` the raw text after ``?`` ('' if none), and
    ``headers`` every header line as (name, value) in arrival order, names in any case.
    """

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    # Each header's values by lower-case name, gathered once: verifying looks up a dozen of them.
    _by_name: dict[str, list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found: dict[str, list[str]] = {}
        for key, value in self.headers:
            found.setdefault(key.lower(), []).append(value)
        object.__setattr__(self, "_by_name", found)  # frozen: set once, here

    def header_names(self) -> Iterable[str]:
        """Every header's name, in lower case, once."""
        return self._by_name.keys()

    def header_values(self, name: str) -> list[str]:
        return self._by_name.get(name.lower(), [])

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class ChunkSigning:
    """What ``chunked.py`` needs to check the chain of chunk signatures that starts at this request's signature."""

    signing_key: bytes
    amz_date: str
    scope: str
    seed_signature: str


class Authorised(NamedTuple):  # made on every request: a tuple costs a third of a frozen dataclass (see _Credential)
    """A verified request: who signed it and how its body must be checked.

    ``content_sha256`` is the expected hex digest when ``payload`` is SIGNED; ``chunk_signing`` is set when chunks
    are signed (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER). ``presigned`` tells a query-string signature from a header
    one.
    """

    access_key: str
    payload: PayloadMode
    content_sha256: str | None
    chunk_signing: ChunkSigning | None
    presigned: bool


class _Credential(NamedTuple):  # a tuple, not a frozen dataclass: made on every request, at under half the cost
    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


class _Signature(NamedTuple):  # as _Credential
    credential: _Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    expires: int | None  # presigned only


SecretLookup = Mapping[str, str] | Callable[[str], str | None]


# --- canonical request ------------------------------------------------------------------------------------------------


def uri_encode(raw: bytes, safe: str = "") -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 ``-._~`` (and ``safe``) as %XX with upper-case hex."""
    return quote(raw, safe=safe)


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a raw (percent-encoded) S3 path: decoded once, encoded once, ``/`` kept, not normalised.
    A path of unreserved characters and ``/`` alone (most keys) is its own canonical form: returned as it is, without
    the decoding and encoding that cost a small GET a microsecond."""
    if _CANONICAL_AS_IS.fullmatch(raw_path):
        return raw_path
    return uri_encode(unquote_to_bytes(raw_path or "/"), safe="/")


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """The raw query string as decoded (name, value) pairs; ``+`` is a literal plus (RFC 3986), as AWS signs it."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def canonical_query(raw_query: str, exclude: str | None = None) -> str:
    """Every query parameter but ``exclude``, each name and value URI-encoded, sorted by name then value."""
    if not raw_query:
        return ""
    encoded = sorted(
        (uri_encode(name), uri_encode(value))
        for name, value in query_pairs(raw_query)
        if name.decode("latin-1") != exclude
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(request: SignedRequest, signed_headers: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header: values trimmed, inner whitespace folded, repeats joined by commas."""
    lines = []
    for name in signed_headers:
        values = request.header_values(name)
        if not values:
            raise S3Error("SignatureDoesNotMatch", f"The signed header {name!r} is not in the request.")
        folded = " ".join(values[0].split()) if len(values) == 1 else ",".join(" ".join(v.split()) for v in values)
        lines.append(f"{name}:{folded}\n")
    return "".join(lines)


def canonical_request(
    request: SignedRequest, signed_headers: Sequence[str], payload_hash: str, exclude_query: str | None = None
) -> str:
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.path),
            canonical_query(request.query, exclude_query),
            canonical_headers(request, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """What is signed: the canonical request's SHA-256 with the date and scope.

    A client hashes its header values as the bytes it sends (botocore sends and signs UTF-8), and the server holds
    them as HTTP's wire text, each byte one latin-1 character; every other part of a canonical request is ASCII. So
    the canonical request is hashed as latin-1, which gives back the bytes that arrived: a UTF-8 ``x-amz-meta-*``
    value signs alike on both sides, where encoding the wire text as UTF-8 would encode its bytes twice."""
    digest = hashlib.sha256(canonical.encode("latin-1")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


@lru_cache(maxsize=SIGNING_KEY_CACHE)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The HMAC key for one day, region and service: four chained HMACs from ``AWS4`` + the secret."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign(key: bytes, text: str) -> str:
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()  # one-shot, in C: no HMAC object per request


# --- parsing what the client sent -------------------------------------------------------------------------------------


@lru_cache(maxsize=PARSED_CACHE)  # a value that fails raises, which is not kept
def _parse_credential(value: str, error: str) -> _Credential:
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not parts[0]:
        raise S3Error(error, f"The credential {value!r} is not KEY/DATE/REGION/s3/aws4_request.")
    access_key, date, region, service, terminator = parts
    if not _CREDENTIAL_DATE.fullmatch(date) or not region:
        raise S3Error(error, f"The credential {value!r} has a malformed date or an empty region.")
    if service != SERVICE or terminator != TERMINATOR:
        raise S3Error(error, f"The credential scope must end in /{SERVICE}/{TERMINATOR}, not /{service}/{terminator}.")
    return _Credential(access_key, date, region, service)


@lru_cache(maxsize=PARSED_CACHE)
def _parse_signed_headers(value: str, error: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not name or name != name.lower() for name in names) or list(names) != sorted(set(names)):
        raise S3Error(error, f"SignedHeaders {value!r} must be lower-case names, sorted, separated by ';'.")
    if "host" not in names:
        raise S3Error(error, "SignedHeaders must include 'host'.")
    return names


def _check_amz_date(amz_date: str | None, credential: _Credential, error: str) -> str:
    if amz_date is None or not _AMZ_DATE.fullmatch(amz_date) or _epoch(amz_date) is None:
        raise S3Error(
            "AccessDenied", "AWS authentication requires a valid x-amz-date (YYYYMMDDTHHMMSSZ) or Date header."
        )
    if amz_date[:8] != credential.date:
        raise S3Error(error, f"The credential date {credential.date} is not the request date {amz_date[:8]}.")
    return amz_date


def _request_time(request: SignedRequest) -> str | None:
    """When a header-signed request was signed, as YYYYMMDDTHHMMSSZ: its x-amz-date, else its Date header (SigV4
    accepts either; botocore signs with Date, and sends no x-amz-date, whenever the caller set a Date)."""
    amz_date = request.header("x-amz-date")
    if amz_date is not None:
        return amz_date
    date = request.header("date")
    if not date:
        return None
    try:
        moment = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000", as botocore writes it: UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_authorization(request: SignedRequest) -> _Signature:
    """The signature in an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    error = "AuthorizationHeaderMalformed"
    header = request.header("authorization") or ""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error("InvalidRequest", f"Unsupported authorization {algorithm!r}; sign with {ALGORITHM} (SigV4).")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name in fields:
            raise S3Error(error, f"The authorization header field {item.strip()!r} is malformed or repeated.")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise S3Error(error, "The authorization header needs exactly Credential, SignedHeaders and Signature.")
    credential = _parse_credential(fields["Credential"], error)
    return _Signature(
        credential=credential,
        signed_headers=_parse_signed_headers(fields["SignedHeaders"], error),
        signature=fields["Signature"],
        amz_date=_check_amz_date(_request_time(request), credential, error),
        expires=None,
    )


def parse_presigned(request: SignedRequest) -> _Signature:
    """The signature in a presigned URL's ``X-Amz-*`` query parameters."""
    error = "AuthorizationQueryParametersError"
    params: dict[str, str] = {}
    for name, value in query_pairs(request.query):
        text = name.decode("utf-8", "replace")
        if text.startswith("X-Amz-"):
            if text in params:
                raise S3Error(error, f"The query parameter {text} is repeated.")
            params[text] = value.decode("utf-8", "replace")
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
    missing = [name for name in (*required, "X-Amz-Signature") if name not in params]
    if missing:
        raise S3Error(error, f"A presigned URL needs {', '.join(missing)}.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(error, f"X-Amz-Algorithm must be {ALGORITHM}.")
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_EXPIRES:
        raise S3Error(error, f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGN_EXPIRES}.")
    credential = _parse_credential(params["X-Amz-Credential"], error)
    return _Signature(
        credential=credential,
        signed_headers=_parse_signed_headers(params["X-Amz-SignedHeaders"], error),
        signature=params["X-Amz-Signature"],
        amz_date=_check_amz_date(params["X-Amz-Date"], credential, error),
        expires=int(expires),
    )


@lru_cache(maxsize=64)  # clients sign with the current second: a few stamps cover every request in flight
def _epoch(amz_date: str) -> float | None:
    """Seconds since the epoch of a YYYYMMDDTHHMMSSZ stamp, None if it names no real moment (month 13, ...)."""
    if not _AMZ_DATE.fullmatch(amz_date):
        return None
    year, month, day = int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8])
    hour, minute, second = int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15])
    try:  # the constructor checks the calendar as strptime does, at a tenth of its cost
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _check_time(signature: _Signature, now: float) -> None:
    signed_at = _epoch(signature.amz_date)
    assert signed_at is not None  # checked when parsed
    if signature.expires is None:
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise S3Error(
                "RequestTimeTooSkewed",
                f"The request was signed at {signature.amz_date}, more than 15 minutes from the server's time; "
                "correct the client's clock.",
            )
        return
    if signed_at - now > MAX_CLOCK_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet: it was signed for a later time.")
    if now > signed_at + signature.expires:
        raise S3Error("AccessDenied", "Request has expired")


def _payload(request: SignedRequest, presigned: bool) -> tuple[PayloadMode, str]:
    value = request.header("x-amz-content-sha256")
    if value is None:
        if presigned:
            return PayloadMode.UNSIGNED, PayloadMode.UNSIGNED.value
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256.")
    if _HEX_SHA256.fullmatch(value):
        return PayloadMode.SIGNED, value
    for mode in PayloadMode:
        if mode is not PayloadMode.SIGNED and value == mode.value:
            return mode, value
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"The payload mode {value!r} is not supported; use one of {_MODES}.")
    raise S3Error("InvalidArgument", f"x-amz-content-sha256 must be a hex SHA-256 or one of {_MODES}, not {value!r}.")


_MODES = ", ".join(mode.value for mode in PayloadMode if mode is not PayloadMode.SIGNED)


def lookup_secret(secrets: SecretLookup, access_key: str) -> str | None:
    """The secret of ``access_key``, None if unknown."""
    return secrets(access_key) if callable(secrets) else secrets.get(access_key)  # callable() is no ABC check


def verify(request: SignedRequest, secrets: SecretLookup, now: float, region: str | None = None) -> Authorised:
    """Check ``request``'s SigV4 signature (header or presigned) at time ``now``; raise ``S3Error`` if it fails.

    ``secrets`` maps an access key to its secret key (None or missing: unknown). ``region``, if given, is the only
    region accepted in the credential scope; None accepts whichever region the client signed for.
    """
    has_header = request.header("authorization") is not None
    presigned = bool(request.query) and any(name == b"X-Amz-Signature" for name, _ in query_pairs(request.query))
    if has_header and presigned:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed: a header or a presigned URL, not both.")
    if not has_header and not presigned:
        raise S3Error("AccessDenied", "Anonymous access is not allowed; sign the request with an access key.")
    signature = parse_presigned(request) if presigned else parse_authorization(request)
    credential = signature.credential
    secret = lookup_secret(secrets, credential.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", f"The access key {credential.access_key!r} is not known to this gateway.")
    if region is not None and credential.region != region:
        error = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
        raise S3Error(error, f"The region {credential.region!r} is wrong; this gateway expects {region!r}.")
    _check_time(signature, now)
    if not presigned:
        _check_amz_headers_signed(request, signature.signed_headers)
    mode, payload_hash = _payload(request, presigned)
    canonical = canonical_request(
        request, signature.signed_headers, payload_hash, exclude_query="X-Amz-Signature" if presigned else None
    )
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = sign(key, string_to_sign(signature.amz_date, credential.scope, canonical))
    if not hmac.compare_digest(expected.encode(), signature.signature.encode("utf-8", "replace")):
        raise S3Error("SignatureDoesNotMatch")
    return Authorised(
        access_key=credential.access_key,
        payload=mode,
        content_sha256=payload_hash.lower() if mode is PayloadMode.SIGNED else None,
        chunk_signing=(
            ChunkSigning(key, signature.amz_date, credential.scope, signature.signature)
            if mode.is_chunk_signed
            else None
        ),
        presigned=presigned,
    )


def _check_amz_headers_signed(request: SignedRequest, signed_headers: Sequence[str]) -> None:
    """Every ``x-amz-*`` header must be signed, so nobody on the way can add metadata or change the payload mode."""
    unsigned = sorted(
        name for name in request.header_names() if name.startswith("x-amz-") and name not in signed_headers
    )
    if unsigned:
        raise S3Error("AccessDenied", f"There were headers present in the request which were not signed: {unsigned}.")

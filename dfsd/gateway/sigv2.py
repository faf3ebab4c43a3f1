"""Presigned URLs in AWS's older Signature Version 2, which boto3 still makes by default.

Theory of operation. ``generate_presigned_url`` in boto3 signs with Signature Version 2 unless the client is configured
with ``signature_version="s3v4"`` (true of boto3 1.44, whatever the region or endpoint), and such links are what people
paste into browsers. A V2 presigned URL carries ``AWSAccessKeyId``, ``Expires`` (seconds since the epoch) and
``Signature``: the base64 of an HMAC-SHA1, keyed by the secret, of::

    METHOD \\n Content-MD5 \\n Content-Type \\n Expires \\n [x-amz-name:value \\n ...] /bucket/raw-path[?subresources]

The path is taken exactly as sent (V2 signs the encoded path, never re-encoded); the bucket is prefixed for a
virtual-host request. Of the query, only S3's subresources (``uploadId``, ``partNumber``, the ``response-*``
overrides, ...) are signed, sorted by name, values percent-decoded. Content-MD5, Content-Type and ``x-amz-*`` come
from the query, where clients put them when presigning, or else from the request's headers. Only query-string V2 is
accepted: an ``Authorization: AWS ...`` header is still refused, since every current SDK signs headers with V4.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import unquote

from .errors import S3Error
from .sigv4 import Authorised, PayloadMode, SecretLookup, SignedRequest, lookup_secret

V2_PARAMETERS = ("AWSAccessKeyId", "Expires", "Signature")

# The query parameters V2 signs (botocore's HmacV1Auth.QSAOfInterest, which follows S3's documented list).
SIGNED_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory", "lifecycle", "location",
        "logging", "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore", "select", "select-type",
        "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
    }
)  # fmt: skip


def _raw_pairs(raw_query: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for item in raw_query.split("&"):
        if item:
            name, sep, value = item.partition("=")
            pairs.append((name, value if sep else None))
    return pairs


def is_presigned_v2(request: SignedRequest) -> bool:
    """The query carries a V2 signature (AWSAccessKeyId, Expires and Signature)."""
    names = {name for name, _ in _raw_pairs(request.query)}
    return all(name in names for name in V2_PARAMETERS)


def string_to_sign(request: SignedRequest, params: dict[str, str], virtual_host_bucket: str | None) -> str:
    def standard(name: str) -> str:
        value = params.get(name, request.header(name))
        return (value or "").strip()

    amz = {name.lower(): value.strip() for name, value in params.items() if name.lower().startswith("x-amz-")}
    for name, _ in request.headers:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in amz:
            amz[lower] = ",".join(value.strip() for value in request.header_values(lower))
    resource = (f"/{virtual_host_bucket}" if virtual_host_bucket else "") + request.path
    subresources = sorted((name, value) for name, value in _raw_pairs(request.query) if name in SIGNED_SUBRESOURCES)
    if subresources:
        resource += "?" + "&".join(
            name if value is None else f"{name}={unquote(value)}" for name, value in subresources
        )
    lines = [request.method.upper(), standard("content-md5"), standard("content-type"), params["Expires"]]
    lines += [f"{name}:{amz[name]}" for name in sorted(amz)]
    return "\n".join([*lines, resource])


def verify_presigned_v2(
    request: SignedRequest, secrets: SecretLookup, now: float, virtual_host_bucket: str | None = None
) -> Authorised:
    """Check a V2 presigned URL at time ``now``; ``virtual_host_bucket`` is the bucket the Host named, if any."""
    params: dict[str, str] = {}
    for name, value in _raw_pairs(request.query):
        params.setdefault(unquote(name), unquote(value or ""))
    expires = params["Expires"]
    if not expires.isdigit():
        raise S3Error("AuthorizationQueryParametersError", "Expires must be a time in seconds since the epoch.")
    access_key = params["AWSAccessKeyId"]
    secret = lookup_secret(secrets, access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", f"The access key {access_key!r} is not known to this gateway.")
    if now > int(expires):
        raise S3Error("AccessDenied", "Request has expired")
    text = string_to_sign(request, params, virtual_host_bucket)
    expected = base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected.encode(), params["Signature"].encode("utf-8", "replace")):
        raise S3Error("SignatureDoesNotMatch")
    return Authorised(access_key, PayloadMode.UNSIGNED, None, None, presigned=True)

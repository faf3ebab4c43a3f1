"""Requests signed by the real botocore code, turned into what the gateway's sans-I/O verifier reads.

botocore signs an ``AWSRequest`` without sending it; a boto3 client is stopped at its ``before-send`` event, after
it has built, checksummed and signed the request exactly as it would put it on the wire. Nothing here signs anything
itself: the point is that our verifier agrees with the code real clients run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from dfsd.gateway.sigv4 import SignedRequest

ACCESS_KEY = "AKIDEXAMPLEDFSD00001"
SECRET_KEY = "dfsd/test/secret+key/0123456789abcdefghij"
SECRETS = {ACCESS_KEY: SECRET_KEY}
REGION = "us-east-1"
ENDPOINT = "http://127.0.0.1:9000"


def text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def to_signed_request(method: str, url: str, headers: Any) -> SignedRequest:
    """What arrives at the server: the path and query as sent, every header, and the Host an HTTP client adds."""
    parts = urlsplit(url)
    pairs = [(text(name), text(value)) for name, value in headers.items()]
    if not any(name.lower() == "host" for name, _ in pairs):
        pairs.append(("Host", parts.netloc))
    return SignedRequest(method=method, path=parts.path, query=parts.query, headers=pairs)


def signed_at(request: SignedRequest) -> float:
    """The moment a request says it was signed (its x-amz-date, header or query)."""
    stamp = request.header("x-amz-date")
    if stamp is None:
        stamp = next(item.split("=")[1] for item in request.query.split("&") if item.startswith("X-Amz-Date="))
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def sign_header(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"", secret: str = SECRET_KEY
) -> SignedRequest:
    """Sign like every SDK request: the Authorization header, with the body's SHA-256 (plain http signs payloads)."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    S3SigV4Auth(Credentials(ACCESS_KEY, secret), "s3", REGION).add_auth(request)
    return to_signed_request(method, request.url, request.headers)


def presign(method: str, url: str, expires: int = 3600, headers: dict[str, str] | None = None) -> SignedRequest:
    """A presigned URL made by botocore's query signer, requested with ``headers``."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION, expires=expires).add_auth(request)
    return to_signed_request(method, request.url, request.headers)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class CapturingClient:
    """A real boto3 S3 client whose requests are captured at ``before-send`` instead of being sent.

    Each request is answered with ``reply`` (status, headers, body), so a test can hand the client a response body
    rendered by the gateway and see what boto3's own parser makes of it.
    """

    def __init__(self, endpoint: str = ENDPOINT, **config: Any) -> None:
        self.sent: list[AWSPreparedRequest] = []
        self.reply: tuple[int, dict[str, str], bytes] = (200, {}, b"")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config),
        )
        self.client.meta.events.register("before-send.s3.*", self._capture)

    def _capture(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        self.sent.append(request)
        status, headers, body = self.reply
        return AWSResponse(request.url, status, headers, _Raw(body))

    def last(self) -> tuple[SignedRequest, bytes]:
        """The last request as the server would see it, and its body bytes as they would go on the wire."""
        request = self.sent[-1]
        body = request.body
        if body is None:
            raw = b""
        elif isinstance(body, bytes | bytearray):
            raw = bytes(body)
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body.read()
        return to_signed_request(request.method, request.url, request.headers), raw

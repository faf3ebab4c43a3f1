"""A real cluster with a real gateway for the gateway's integration tests, and ways to talk to it.

The ``live_gateway`` fixture (conftest.py) starts a manager, two storage nodes and ``dfsd gateway`` (two users,
alice and bob) once per test module; tests use buckets of their own (``LiveGateway.bucket``). Requests go out through
real clients: boto3, urllib, http.client, raw sockets. ``signed_request`` signs the payload modes boto3 does not send
over plain HTTP (unsigned, aws-chunked signed and with a trailer) with the gateway's SigV4 primitives, whose agreement
with AWS's published examples and botocore is tested in ``test_gateway_sigv4.py``.
"""

from __future__ import annotations

import hashlib
import http.client
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from harness import Daemon, LocalCluster

from dfsd.gateway import sigv4

REGION = "us-east-1"
VIRTUAL_HOST_DOMAIN = "s3.dfsd.test"  # the live gateway's --domain: BUCKET.s3.dfsd.test names a bucket


@dataclass(frozen=True)
class User:
    name: str
    access_key: str
    secret_key: str


ALICE = User("alice", "AKIDALICE0000000001", "alice/secret+key/0123456789abcdef")
BOB = User("bob", "AKIDBOB000000000002", "bob/secret+key/0123456789abcdefgh")


def write_credentials(path: Path, *users: User) -> Path:
    path.write_text(
        "".join(
            f'[[user]]\nname = "{u.name}"\naccess_key = "{u.access_key}"\nsecret_key = "{u.secret_key}"\n\n'
            for u in users
        )
    )
    return path


@dataclass
class LiveGateway:
    cluster: LocalCluster
    daemon: Daemon

    @property
    def endpoint(self) -> str:
        return f"http://{self.daemon.address}"

    def s3(self, user: User = ALICE, **config: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=user.access_key,
            aws_secret_access_key=user.secret_key,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, **config),
        )

    def bucket(self, user: User = ALICE) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.s3(user).create_bucket(Bucket=name)
        return name

    def names(self, prefix: str = "") -> list[str]:
        """The dfsd names under ``prefix``, as the CBOR client lists them."""
        from dfsd import aio
        from dfsd.client import Client

        async def listing() -> list[str]:
            async with Client(self.cluster.address) as client:
                return [info.name async for info in client.list(prefix)]

        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(aio.run, listing()).result()

    def hidden_files(self) -> int:
        """How many stored files no listing shows: the parts of multipart uploads (``PARTS_PREFIX``)."""
        from dfsd import aio
        from dfsd.client import Client

        async def count() -> int:
            async with Client(self.cluster.address) as client:
                listed = sum([1 async for _ in client.list()])
                return (await client.status()).files - listed

        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(aio.run, count()).result()


def running_gateway(root: Path) -> Iterator[LiveGateway]:
    """A manager, two nodes and a gateway in ``root`` until the generator is closed (the ``live_gateway`` fixture)."""
    cluster = LocalCluster(root)
    try:
        cluster.start_manager()
        for node_id in (100, 101):
            cluster.start_node(node_id)
        users = write_credentials(root / "users.toml", ALICE, BOB)
        daemon = cluster.start_gateway("--domain", VIRTUAL_HOST_DOMAIN, credentials=users)
        yield LiveGateway(cluster, daemon)
    finally:
        cluster.stop()


def signed_request(
    method: str,
    url: str,
    *,
    payload_hash: str,
    headers: dict[str, str] | None = None,
    user: User = ALICE,
    now: datetime | None = None,
) -> tuple[dict[str, str], str]:
    """Headers signing a request with ``payload_hash`` as x-amz-content-sha256; and the signature (the seed)."""
    parts = urlsplit(url)
    moment = now or datetime.now(UTC)
    amz_date, date = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    all_headers = {
        "host": parts.netloc,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        **(headers or {}),
    }
    signed = sorted(name.lower() for name in all_headers)
    request = sigv4.SignedRequest(method, parts.path, parts.query, list(all_headers.items()))
    canonical = sigv4.canonical_request(request, signed, payload_hash)
    scope = f"{date}/{REGION}/s3/aws4_request"
    key = sigv4.signing_key(user.secret_key, date, REGION)
    signature = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, canonical))
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={user.access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature}"
    )
    return all_headers, signature


def chunk_signing_key(user: User, now: datetime) -> bytes:
    return sigv4.signing_key(user.secret_key, now.strftime("%Y%m%d"), REGION)


def send(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request by http.client; returns status, headers (lower-case names) and body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if "content-length" not in {name.lower() for name in headers}:
            connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

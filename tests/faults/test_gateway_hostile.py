"""Hostile input at the gateway: malformed XML, bodies shorter or longer than announced, clients that vanish
mid-upload, oversized headers, keys with NUL, invalid bucket names. Whatever arrives, the gateway answers (or drops)
that one request, keeps nothing of a failed upload, and goes on serving."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import socket
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from gateway_live import ALICE, LiveGateway, send, signed_request, write_credentials
from harness import LocalCluster

from dfsd.gateway.chunked import EMPTY_SHA256


def raw_put_head(
    live_gateway: LiveGateway,
    bucket: str,
    key: str,
    length: int,
    query: str = "",
    payload_hash: str = "UNSIGNED-PAYLOAD",
) -> bytes:
    target = f"/{bucket}/{key}" + (f"?{query}" if query else "")
    headers, _ = signed_request("PUT", live_gateway.endpoint + target, payload_hash=payload_hash)
    lines = [f"PUT {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), f"content-length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(live_gateway: LiveGateway) -> socket.socket:
    host, port = urlsplit(live_gateway.endpoint).netloc.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def still_serving(live_gateway: LiveGateway) -> None:
    url = live_gateway.endpoint + "/"
    assert send("GET", url, signed_request("GET", url, payload_hash=EMPTY_SHA256)[0])[0] == 200


@pytest.mark.parametrize("operation", ["delete", "complete"])
def test_malformed_xml_is_malformed_xml(live_gateway: LiveGateway, operation: str) -> None:
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    if operation == "delete":
        url = f"{live_gateway.endpoint}/{bucket}?delete="
    else:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        url = f"{live_gateway.endpoint}/{bucket}/k?uploadId={upload_id}"
    for body in (b"<Delete><Object><Key>a</Key></Object>", b'<!DOCTYPE x [<!ENTITY a "b">]><Delete/>', b"\xff\xfe"):
        headers, _ = signed_request("POST", url, payload_hash="UNSIGNED-PAYLOAD")
        status, _, answer = send("POST", url, headers, body)
        assert status == 400 and b"MalformedXML" in answer, answer
    still_serving(live_gateway)


@pytest.mark.parametrize("declared", ["x-amz-content-sha256", "content-md5", "x-amz-checksum-crc32"])
def test_a_delete_objects_body_swapped_under_its_signature_deletes_nothing_repro(
    live_gateway: LiveGateway, declared: str
) -> None:
    """The body of a DeleteObjects that does not hash to what its request declares (the signed SHA-256, or
    Content-MD5, or the x-amz-checksum-* that SDKs send in its place) is refused before anything is deleted: a
    signature covers the body only through that hash. The gateway used to parse and act on it unchecked."""
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="kept", Body=b"still here")
    url = f"{live_gateway.endpoint}/{bucket}?delete="
    signed_body = b"<Delete><Object><Key>other</Key></Object></Delete>"
    swapped = b"<Delete><Object><Key>kept</Key></Object></Delete>"
    if declared == "x-amz-content-sha256":
        headers, _ = signed_request("POST", url, payload_hash=hashlib.sha256(signed_body).hexdigest())
        expected = b"XAmzContentSHA256Mismatch"
    else:
        digest = hashlib.md5(signed_body).digest() if declared == "content-md5" else zlib.crc32(signed_body).to_bytes(4)
        value = base64.b64encode(digest).decode()
        headers, _ = signed_request("POST", url, payload_hash="UNSIGNED-PAYLOAD", headers={declared: value})
        expected = b"BadDigest"
    status, _, answer = send("POST", url, headers, swapped)
    assert status == 400 and expected in answer, answer
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"still here"
    headers, _ = signed_request("POST", url, payload_hash=hashlib.sha256(swapped).hexdigest())
    assert send("POST", url, headers, swapped)[0] == 200
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def wait_until_settled(live_gateway: LiveGateway, bucket: str) -> None:
    """Until the cluster holds no partial file and nothing of ``bucket``: the failed upload left nothing."""
    live_gateway.cluster.wait_no_orphans()
    deadline = time.monotonic() + 15
    while live_gateway.names(bucket + "/"):
        assert time.monotonic() < deadline, live_gateway.names(bucket + "/")
        time.sleep(0.05)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("sent", [1000, 3 * 1024 * 1024])
def test_client_gone_mid_body_keeps_nothing(live_gateway: LiveGateway, sent: int, signed: bool) -> None:
    """Signed, the body's SHA-256 is the one declared, which the gateway sends on unhashed once the body ends: a body
    cut short never ends, so nothing is kept either way."""
    bucket = live_gateway.bucket()
    size = 8 * 1024 * 1024
    payload_hash = hashlib.sha256(b"x" * size).hexdigest() if signed else "UNSIGNED-PAYLOAD"
    with connect(live_gateway) as client:
        client.sendall(raw_put_head(live_gateway, bucket, "cut", size, payload_hash=payload_hash) + b"x" * sent)
        if sent > 1024 * 1024:  # streamed: wait until the node is writing it, then vanish
            deadline = time.monotonic() + 15
            while not live_gateway.cluster.partial_files():
                assert time.monotonic() < deadline, "the upload never reached a node"
                time.sleep(0.01)
    wait_until_settled(live_gateway, bucket)
    assert live_gateway.names(bucket + "/") == []
    still_serving(live_gateway)


def test_a_part_cut_short_keeps_nothing_and_the_upload_goes_on(live_gateway: LiveGateway) -> None:
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    with connect(live_gateway) as client:
        head = raw_put_head(live_gateway, bucket, "k", 8 * 1024 * 1024, f"partNumber=1&uploadId={upload_id}")
        client.sendall(head + b"x" * (3 * 1024 * 1024))
        deadline = time.monotonic() + 15
        while not live_gateway.cluster.partial_files():  # the node is writing the part: vanish
            assert time.monotonic() < deadline, "the part never reached a node"
            time.sleep(0.01)
    live_gateway.cluster.wait_no_orphans()
    assert s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id).get("Parts", []) == []
    assert live_gateway.hidden_files() == 0
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"whole")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"whole"


def test_parts_named_out_of_order_complete_nothing(live_gateway: LiveGateway) -> None:
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"1" * (5 << 20))["ETag"]
    second = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"2")["ETag"]
    for parts in ([(2, second), (1, first)], [(1, first), (1, first), (2, second)]):
        with pytest.raises(ClientError) as excinfo:
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key="k",
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )
        assert excinfo.value.response["Error"]["Code"] == "InvalidPartOrder"
    assert live_gateway.names(bucket + "/") == []
    s3.complete_multipart_upload(  # the upload is as it was
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]},
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1" * (5 << 20) + b"2"
    assert live_gateway.hidden_files() == 0


def test_body_longer_than_content_length_stores_only_what_was_announced(live_gateway: LiveGateway) -> None:
    bucket = live_gateway.bucket()
    with connect(live_gateway) as client:
        client.sendall(raw_put_head(live_gateway, bucket, "k", 5) + b"12345 and then some garbage\r\n\r\n")
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    assert live_gateway.s3().get_object(Bucket=bucket, Key="k")["Body"].read() == b"12345"
    still_serving(live_gateway)


# Over MAX_HEADER_BYTES (64 KiB) but within granian's read buffer (1 MiB), the app answers 431; beyond the buffer,
# granian refuses the head itself, perhaps by closing the connection while it is still being sent.
@pytest.mark.parametrize("filler", [200_000, 2_000_000])
def test_oversized_headers_are_refused(live_gateway: LiveGateway, filler: int) -> None:
    with connect(live_gateway) as client:
        try:
            client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * filler + b"\r\n\r\n")
            answer = client.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 2")
    if filler < 1 << 20:
        assert answer.startswith(b"HTTP/1.1 431")
    still_serving(live_gateway)


def test_nul_in_key_and_invalid_bucket_names(live_gateway: LiveGateway) -> None:
    bucket = live_gateway.bucket()
    for path, code in (
        (f"/{bucket}/a%00b", b"InvalidArgument"),
        ("/ab/k", b"InvalidBucketName"),
        ("/A_B/k", b"InvalidBucketName"),
    ):
        url = live_gateway.endpoint + path
        status, _, body = send("PUT", url, signed_request("PUT", url, payload_hash="UNSIGNED-PAYLOAD")[0], b"x")
        assert status == 400 and code in body, body
    with pytest.raises(ClientError):
        live_gateway.s3().put_object(Bucket=bucket, Key="k" * 1100, Body=b"x")
    assert live_gateway.names(bucket + "/") == []


def test_cluster_errors_map_to_503_with_retry_after_and_404(bare_cluster: LocalCluster, tmp_path: Path) -> None:
    """Error 1 (no node up) and error 4 (the file's node is down) are 503 with Retry-After, in S3 and REST alike;
    error 2 is NoSuchKey and REST's 404 with code 2 (the README's table)."""
    gateway = LiveGateway(
        bare_cluster, bare_cluster.start_gateway(credentials=write_credentials(tmp_path / "u", ALICE))
    )
    s3 = gateway.s3()
    s3.create_bucket(Bucket="errors")  # a record of the manager's: no node needed
    url = f"{gateway.endpoint}/errors/k"  # but no node is up to hold an object
    status, headers, body = send("PUT", url, signed_request("PUT", url, payload_hash=EMPTY_SHA256)[0])
    assert status == 503 and headers["retry-after"] == "3" and b"ServiceUnavailable" in body
    basic = "Basic " + base64.b64encode(f"{ALICE.access_key}:{ALICE.secret_key}".encode()).decode()
    status, _, body = send("POST", f"{gateway.endpoint}/file?filename=x", {"host": "h", "authorization": basic}, b"x")
    assert status == 503 and json.loads(body)["code"] == 1
    bare_cluster.start_node(100)
    s3.put_object(Bucket="errors", Key="k", Body=b"held by node 100")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="errors", Key="absent")
    assert excinfo.value.response["Error"]["Code"] == "NoSuchKey"
    bare_cluster.nodes[100].kill()
    bare_cluster.wait_node_down(100)
    url = f"{gateway.endpoint}/errors/k"
    status, headers, body = send("GET", url, signed_request("GET", url, payload_hash=EMPTY_SHA256)[0])
    assert status == 503 and headers["retry-after"] == "3" and b"ServiceUnavailable" in body
    status, _, body = send("GET", f"{gateway.endpoint}/file/errors/k", {"host": "h", "authorization": basic})
    assert status == 503 and json.loads(body)["code"] == 4


def test_sigterm_lets_an_upload_in_flight_finish(live_gateway: LiveGateway, tmp_path: Path) -> None:
    users = write_credentials(tmp_path / "users.toml", ALICE)
    gateway = LiveGateway(live_gateway.cluster, live_gateway.cluster.start_gateway("--grace", "20", credentials=users))
    bucket = gateway.bucket()
    host, port = gateway.daemon.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall(raw_put_head(gateway, bucket, "late", 2_000_000) + b"x" * 1_000_000)
        deadline = time.monotonic() + 15
        while not gateway.cluster.partial_files():
            assert time.monotonic() < deadline, "the upload never reached a node"
            time.sleep(0.01)
        gateway.daemon.process.send_signal(signal.SIGTERM)
        while '"stopping"' not in gateway.daemon.log.read_text():  # the gateway has begun to stop, mid-upload
            assert time.monotonic() < deadline + 15, "the gateway never logged that it is stopping"
            time.sleep(0.01)
        client.sendall(b"x" * 1_000_000)
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert gateway.daemon.process.wait(30) == 0
    assert live_gateway.s3().head_object(Bucket=bucket, Key="late")["ContentLength"] == 2_000_000

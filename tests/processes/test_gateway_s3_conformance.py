"""What a third-party S3 conformance run (ceph's s3-tests) found the gateway doing unlike S3, each pinned by a
regression test of our own through real boto3 against a real gateway and cluster."""

from __future__ import annotations

import http.client
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from gateway_live import LiveGateway, signed_request

from dfsd.gateway.chunked import EMPTY_SHA256


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def add_headers(client: Any, operation: str, headers: dict[str, str]) -> None:
    """Have ``client`` send ``headers`` with every ``operation`` call, as if its caller had set them."""

    def add(params: dict[str, Any], **_: Any) -> None:
        params["headers"].update(headers)

    client.meta.events.register(f"before-call.s3.{operation}", add)


def test_unimplemented_subresources_never_fall_through_to_the_plain_operation_repro(
    live_gateway: LiveGateway,
) -> None:
    # PutObjectTagging was taken as a PutObject (the object replaced by the tagging XML), DeleteObjectTagging as a
    # DeleteObject, DeleteBucketCors as a DeleteBucket, PutBucketVersioning as a CreateBucket (BucketAlreadyOwnedByYou)
    # and GetBucketPolicy as a ListObjects.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"precious")
    calls = [
        lambda: s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
        lambda: s3.delete_object_tagging(Bucket=bucket, Key="k"),
        lambda: s3.get_bucket_policy(Bucket=bucket),
        lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == "NotImplemented"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"precious"
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket_cors(Bucket=bucket)  # the bucket is empty now: a DeleteBucket would have removed it
    assert error_code(excinfo) == "NotImplemented"
    s3.head_bucket(Bucket=bucket)


def test_utf8_user_metadata_signs_alike_on_both_sides_repro(live_gateway: LiveGateway) -> None:
    # botocore sends and signs a header value as UTF-8; the gateway hashed the wire text encoded as UTF-8 once more.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    add_headers(s3, "PutObject", {"x-amz-meta-greeting": "Hello Wörld é"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    sent_back = s3.head_object(Bucket=bucket, Key="k")["Metadata"]["greeting"]
    assert sent_back.encode("latin-1").decode("utf-8") == "Hello Wörld é"  # the same bytes, read as HTTP's latin-1


def test_request_signed_with_a_date_header_and_no_x_amz_date_repro(live_gateway: LiveGateway) -> None:
    # SigV4 takes its time from x-amz-date, or from Date when there is none: botocore signs with Date (and drops
    # x-amz-date) whenever the caller sets one; the gateway refused such requests as AccessDenied.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    add_headers(s3, "PutObject", {"Date": formatdate(usegmt=True)})
    s3.put_object(Bucket=bucket, Key="dated", Body=b"x")
    assert s3.get_object(Bucket=bucket, Key="dated")["Body"].read() == b"x"


def test_list_objects_v1_prefix_is_not_url_encoded_repro(live_gateway: LiveGateway) -> None:
    # boto3 asks for encoding-type=url and decodes V1's keys, Delimiter and markers, not its Prefix, which S3 sends
    # as it came; the gateway encoded it, so callers read back "%0A" for a newline.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="a b/c+d", Body=b"x")
    for prefix in ("\n", "a b/"):
        v1, v2 = s3.list_objects(Bucket=bucket, Prefix=prefix), s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert v1["Prefix"] == prefix and v2["Prefix"] == prefix
    assert [entry["Key"] for entry in s3.list_objects(Bucket=bucket, Prefix="a b/")["Contents"]] == ["a b/c+d"]


def test_upload_part_copy_range_past_the_source_is_invalid_range_repro(live_gateway: LiveGateway) -> None:
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="source", Body=b"12345")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dest")["UploadId"]
    copy = dict(Bucket=bucket, Key="dest", UploadId=upload_id, PartNumber=1, CopySource=f"{bucket}/source")
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(**copy, CopySourceRange="bytes=0-21")
    assert error_code(excinfo) == "InvalidRange"
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(**copy, CopySourceRange="bytes=hello-world")
    assert error_code(excinfo) == "InvalidArgument"


def test_acls_are_the_owners_alone_and_say_so_repro(live_gateway: LiveGateway) -> None:
    # GetObjectAcl answered the object's bytes and PutObjectAcl replaced the object with an empty one; now dfsd
    # answers as S3 does for a bucket whose ACLs are disabled: FULL_CONTROL to the owner, and no other grant taken.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"precious")
    for acl in (s3.get_bucket_acl(Bucket=bucket), s3.get_object_acl(Bucket=bucket, Key="k")):
        assert acl["Owner"]["ID"] == "alice"
        assert [(g["Grantee"]["ID"], g["Permission"]) for g in acl["Grants"]] == [("alice", "FULL_CONTROL")]
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    for call in (
        lambda: s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read"),
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write"),
        lambda: s3.put_bucket_acl(Bucket=bucket, GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == "AccessControlListNotSupported"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"precious"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object_acl(Bucket=bucket, Key="absent")
    assert error_code(excinfo) == "NoSuchKey"


def test_conditional_put_object_is_honoured_repro(live_gateway: LiveGateway) -> None:
    # If-None-Match and If-Match on PutObject were ignored: a create-only PUT (If-None-Match: *, as lock files use
    # it) replaced the object another client held.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()

    def put(body: bytes, **conditions: str) -> None:
        client = live_gateway.s3()
        add_headers(client, "PutObject", conditions)
        client.put_object(Bucket=bucket, Key="lock", Body=body)

    def refused(body: bytes, **conditions: str) -> None:
        with pytest.raises(ClientError) as excinfo:
            put(body, **conditions)
        assert error_code(excinfo) == "PreconditionFailed"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    refused(b"never", **{"If-Match": "*"})  # nothing to match
    put(b"first", **{"If-None-Match": "*"})
    refused(b"second", **{"If-None-Match": "*"})
    etag = s3.head_object(Bucket=bucket, Key="lock")["ETag"]
    refused(b"second", **{"If-None-Match": etag})
    refused(b"second", **{"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert s3.get_object(Bucket=bucket, Key="lock")["Body"].read() == b"first"
    put(b"third", **{"If-Match": etag})
    put(b"fourth", **{"If-None-Match": etag})  # the ETag is the third's now
    assert s3.get_object(Bucket=bucket, Key="lock")["Body"].read() == b"fourth"


def test_put_without_content_length_is_missing_content_length_repro(live_gateway: LiveGateway) -> None:
    # A PUT that said neither Content-Length nor Transfer-Encoding was stored as an empty object; S3 answers 411.
    bucket = live_gateway.bucket()
    url = f"{live_gateway.endpoint}/{bucket}/unsized"
    headers, _ = signed_request("PUT", url, payload_hash=EMPTY_SHA256)
    status, _, body = send_without_length("PUT", url, headers)
    assert status == 411 and b"<Code>MissingContentLength</Code>" in body
    assert live_gateway.names(bucket + "/") == []


def send_without_length(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A request with no body and no Content-Length header at all (``gateway_live.send`` always adds one)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    try:
        connection.putrequest(method, parts.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_list_multipart_uploads_pages_with_its_markers_repro(live_gateway: LiveGateway) -> None:
    # key-marker and upload-id-marker were ignored: every page was the first, so a paginating client (aws-cli,
    # boto3's paginator, rclone cleanup) looped for ever once a bucket held more uploads than one page.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    started = sorted(
        (key, s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]) for key in ("a", "b", "b", "b", "c")
    )
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    listed = [(upload["Key"], upload["UploadId"]) for page in pages for upload in page.get("Uploads", [])]
    assert listed == started
    after_b = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="b")["Uploads"]
    assert [(upload["Key"], upload["UploadId"]) for upload in after_b] == started[4:]
    for key, upload_id in started:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def test_a_version_other_than_null_is_invalid_not_the_current_object_repro(live_gateway: LiveGateway) -> None:
    # dfsd buckets are unversioned (every object's VersionId is "null"), but a request naming some other version
    # acted on the current object: DeleteObject(VersionId=...) deleted it, GetObject read it.
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"precious")
    for call in (
        lambda: s3.delete_object(Bucket=bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmJ"),
        lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmJ"),
        lambda: s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "v2"}),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == "InvalidArgument"
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": "v2"}]})
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("k", "InvalidArgument")]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"precious"
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": "null"}]})
    assert live_gateway.names(bucket + "/") == []

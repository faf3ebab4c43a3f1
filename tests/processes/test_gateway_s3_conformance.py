"""What a third-party S3 conformance run (ceph's s3-tests) found the gateway doing unlike S3, each pinned by a
regression test of our own through real boto3 against a real gateway and cluster."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest
from botocore.exceptions import ClientError
from gateway_live import LiveGateway


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
    # DeleteObject, DeleteBucketCors as a DeleteBucket and PutBucketAcl as a CreateBucket (BucketAlreadyOwnedByYou).
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"precious")
    calls = [
        lambda: s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
        lambda: s3.delete_object_tagging(Bucket=bucket, Key="k"),
        lambda: s3.get_object_acl(Bucket=bucket, Key="k"),
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public-read"),
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

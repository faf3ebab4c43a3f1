"""Presigned URLs in Signature Version 2, made by boto3's default presigner and botocore's HmacV1QueryAuth."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from gateway_clients import ACCESS_KEY, ENDPOINT, REGION, SECRET_KEY, SECRETS, sign_header, signed_at, to_signed_request

from dfsd.gateway.auth import authenticate
from dfsd.gateway.errors import S3Error
from dfsd.gateway.sigv2 import is_presigned_v2
from dfsd.gateway.sigv4 import PayloadMode, SignedRequest


def default_presigned(method: str, params: dict[str, object], expires: int = 600) -> tuple[SignedRequest, float]:
    """A URL from boto3's generate_presigned_url with no signature_version configured (V2 in boto3 1.44)."""
    client = boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    )
    url = client.generate_presigned_url(method, Params=params, ExpiresIn=expires)
    request = to_signed_request("GET" if method == "get_object" else "PUT", url, {"User-Agent": "Mozilla/5.0"})
    deadline = float(parse_qs(urlsplit(url).query)["Expires"][0])
    return request, deadline


@pytest.mark.parametrize(
    "params",
    [
        {"Bucket": "bucket", "Key": "plain.txt"},
        {"Bucket": "bucket", "Key": "dir/ünï cødé + & = ?.mp4"},
        {
            "Bucket": "bucket",
            "Key": "videos/clip 1.mp4",
            "ResponseContentDisposition": 'attachment; filename="clip 1.mp4"',
            "ResponseContentType": "video/mp4",
        },
    ],
)
def test_boto3_default_presigned_get(params: dict[str, object]) -> None:
    request, deadline = default_presigned("get_object", params)
    assert is_presigned_v2(request)
    authorised = authenticate(request, SECRETS, deadline)
    assert authorised.access_key == ACCESS_KEY
    assert authorised.presigned
    assert authorised.payload is PayloadMode.UNSIGNED


def test_boto3_default_presigned_put_part() -> None:
    request, deadline = default_presigned(
        "upload_part", {"Bucket": "bucket", "Key": "big", "UploadId": "u-1", "PartNumber": 3}
    )
    assert authenticate(request, SECRETS, deadline).presigned


def test_expired_v2_url() -> None:
    request, deadline = default_presigned("get_object", {"Bucket": "bucket", "Key": "k"})
    with pytest.raises(S3Error) as caught:
        authenticate(request, SECRETS, deadline + 1)
    assert (caught.value.code, caught.value.message) == ("AccessDenied", "Request has expired")


def test_v2_url_with_a_changed_path_or_subresource_is_refused() -> None:
    request, deadline = default_presigned("get_object", {"Bucket": "bucket", "Key": "k", "ResponseContentType": "a/b"})
    for changed in (
        SignedRequest(request.method, "/bucket/other", request.query, request.headers),
        SignedRequest(request.method, request.path, request.query.replace("a%2Fb", "text%2Fhtml"), request.headers),
        SignedRequest("DELETE", request.path, request.query, request.headers),
    ):
        with pytest.raises(S3Error) as caught:
            authenticate(changed, SECRETS, deadline)
        assert caught.value.code == "SignatureDoesNotMatch"


def test_v2_url_with_unknown_key_or_wrong_secret() -> None:
    request, deadline = default_presigned("get_object", {"Bucket": "bucket", "Key": "k"})
    with pytest.raises(S3Error) as caught:
        authenticate(request, {}, deadline)
    assert caught.value.code == "InvalidAccessKeyId"
    with pytest.raises(S3Error) as caught:
        authenticate(request, {ACCESS_KEY: "wrong"}, deadline)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_botocore_v2_query_signer_with_virtual_host_and_signed_headers() -> None:
    request = AWSRequest(
        method="PUT",
        url="http://bucket.s3.local:9000/some%20key",
        headers={"Content-Type": "text/plain", "x-amz-meta-colour": "blue"},
    )
    request.auth_path = "/bucket/some%20key"
    HmacV1QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), expires=60).add_auth(request)
    signed = to_signed_request("PUT", request.url, {"Content-Type": "text/plain", "x-amz-meta-colour": "blue"})
    deadline = float(parse_qs(urlsplit(request.url).query)["Expires"][0])
    assert authenticate(signed, SECRETS, deadline, virtual_host_bucket="bucket").presigned
    with pytest.raises(S3Error):
        authenticate(signed, SECRETS, deadline)  # without the bucket the resource differs


def test_v2_with_a_malformed_expiry() -> None:
    request = SignedRequest("GET", "/b/k", f"AWSAccessKeyId={ACCESS_KEY}&Expires=soon&Signature=x", [("Host", "h")])
    with pytest.raises(S3Error) as caught:
        authenticate(request, SECRETS, 0)
    assert caught.value.code == "AuthorizationQueryParametersError"


def test_v4_requests_still_go_to_sigv4() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")

    assert authenticate(request, SECRETS, signed_at(request)).payload is PayloadMode.SIGNED

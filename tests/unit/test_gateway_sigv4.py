"""SigV4 verification against AWS's published examples and against requests signed by the real botocore signer."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from gateway_clients import (
    ACCESS_KEY,
    ENDPOINT,
    SECRETS,
    CapturingClient,
    presign,
    sign_header,
    signed_at,
    to_signed_request,
)

from dfsd.gateway.errors import S3Error
from dfsd.gateway.sigv4 import (
    PayloadMode,
    SignedRequest,
    canonical_query,
    canonical_uri,
    verify,
)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRETS = {AWS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
AWS_NOW = datetime(2013, 5, 24, tzinfo=UTC).timestamp()


def expect_error(code: str, request: SignedRequest, now: float | None = None, **kwargs: object) -> S3Error:
    with pytest.raises(S3Error) as caught:
        verify(request, SECRETS, signed_at(request) if now is None else now, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value
    return caught.value


# --- AWS's published examples (the S3 API reference, "Signature Calculations for the Authorization Header") -------- --


def test_aws_example_get_object_with_range() -> None:
    request = SignedRequest(
        "GET",
        "/test.txt",
        "",
        [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ],
    )
    authorised = verify(request, AWS_SECRETS, AWS_NOW)
    assert authorised.access_key == AWS_KEY
    assert authorised.payload is PayloadMode.SIGNED
    assert authorised.content_sha256 == EMPTY_SHA256
    assert not authorised.presigned


AWS_PRESIGNED = SignedRequest(
    "GET",
    "/test.txt",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    [("Host", "examplebucket.s3.amazonaws.com")],
)


def test_aws_example_presigned_url() -> None:
    authorised = verify(AWS_PRESIGNED, AWS_SECRETS, AWS_NOW + 86400)
    assert authorised.presigned
    assert authorised.payload is PayloadMode.UNSIGNED


def test_presigned_url_expires() -> None:
    with pytest.raises(S3Error) as caught:
        verify(AWS_PRESIGNED, AWS_SECRETS, AWS_NOW + 86401)
    assert caught.value.code == "AccessDenied"
    assert caught.value.message == "Request has expired"


# --- the real botocore signer -----------------------------------------------------------------------------------------

KEYS = [
    "plain.txt",
    "dir/sub dir/file with spaces.bin",
    "unicodé/日本語/ключ",
    "symbols/a+b=c&d;e,f@g$h!i'j(k)l*m~n",
    "percent/100%/done",
    "dots/../../etc/passwd",
    "double//slash//",
    "tilde~and-under_score.dot",
]


@pytest.mark.parametrize("key", KEYS)
def test_botocore_signed_put_with_payload_hash(key: str) -> None:
    client = CapturingClient()
    client.client.put_object(Bucket="bucket", Key=key, Body=b"hello world", Metadata={"colour": "blue  and   green"})
    request, body = client.last()
    authorised = verify(request, SECRETS, signed_at(request))
    assert authorised.access_key == ACCESS_KEY
    assert authorised.payload is PayloadMode.SIGNED
    assert authorised.content_sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "params",
    [
        {"Prefix": "a b/c+d", "Delimiter": "/", "MaxKeys": 10},
        {"Prefix": "日本", "StartAfter": "x=y&z", "EncodingType": "url"},
        {"ContinuationToken": "dG9rZW4/Kys=", "FetchOwner": True},
    ],
)
def test_botocore_signed_list_with_query(params: dict[str, object]) -> None:
    client = CapturingClient()
    client.client.list_objects_v2(Bucket="bucket", **params)
    request, _ = client.last()
    assert verify(request, SECRETS, signed_at(request)).payload is PayloadMode.SIGNED


def test_botocore_presigned_get_url_with_response_overrides() -> None:
    # Without signature_version="s3v4", boto3 presigns with Signature Version 2 for a custom endpoint.
    client = CapturingClient(signature_version="s3v4")
    url = client.client.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": "bucket",
            "Key": "videos/clip 1.mp4",
            "ResponseContentDisposition": 'attachment; filename="clip 1.mp4"',
            "ResponseContentType": "video/mp4",
        },
        ExpiresIn=600,
    )

    request = to_signed_request("GET", url, {"Range": "bytes=0-99", "User-Agent": "Mozilla/5.0"})
    now = signed_at(request)
    assert verify(request, SECRETS, now + 600).presigned
    expect_error("AccessDenied", request, now=now + 601)


def test_botocore_query_signer_presigned_put() -> None:
    request = presign("PUT", f"{ENDPOINT}/bucket/some%20key?partNumber=3&uploadId=abc", expires=60)
    assert verify(request, SECRETS, signed_at(request)).payload is PayloadMode.UNSIGNED


def test_https_streaming_upload_uses_the_unsigned_trailer_mode() -> None:
    client = CapturingClient(endpoint="https://127.0.0.1:9443")
    client.client.put_object(Bucket="bucket", Key="k", Body=b"x" * 1000, ChecksumAlgorithm="SHA256")
    request, _ = client.last()
    authorised = verify(request, SECRETS, signed_at(request))
    assert authorised.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    assert authorised.payload.is_chunked


def test_signing_key_is_used_for_the_signed_region_unless_one_is_required() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    assert verify(request, SECRETS, signed_at(request), region="us-east-1")
    expect_error("AuthorizationHeaderMalformed", request, region="eu-west-1")


# --- refusals ---------------------------------------------------------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match() -> None:
    expect_error("SignatureDoesNotMatch", sign_header("GET", f"{ENDPOINT}/bucket/key", secret="not the secret"))


def test_unknown_access_key_is_invalid_access_key_id() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(S3Error) as caught:
        verify(request, {}, signed_at(request))
    assert caught.value.code == "InvalidAccessKeyId"
    assert caught.value.status == 403


def test_secrets_may_be_a_lookup_function() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    assert verify(request, SECRETS.get, signed_at(request)).access_key == ACCESS_KEY


@pytest.mark.parametrize("offset", [-15 * 60 - 1, 15 * 60 + 1])
def test_clock_skew_over_15_minutes_is_refused(offset: int) -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    error = expect_error("RequestTimeTooSkewed", request, now=signed_at(request) + offset)
    assert error.status == 403


@pytest.mark.parametrize("offset", [-15 * 60, 15 * 60])
def test_clock_skew_of_15_minutes_is_accepted(offset: int) -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    assert verify(request, SECRETS, signed_at(request) + offset)


def tampered(request: SignedRequest, **changes: object) -> SignedRequest:
    fields = {"method": request.method, "path": request.path, "query": request.query, "headers": request.headers}
    fields.update(changes)
    return SignedRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"method": "DELETE"},
        {"path": "/bucket/other"},
        {"path": "/bucket/key/"},
        {"query": "acl="},
    ],
)
def test_any_change_to_a_signed_part_breaks_the_signature(change: dict[str, object]) -> None:
    request = sign_header("PUT", f"{ENDPOINT}/bucket/key", headers={"Content-Type": "text/plain"}, body=b"abc")
    expect_error("SignatureDoesNotMatch", tampered(request, **change))


def test_a_changed_signed_header_breaks_the_signature() -> None:
    request = sign_header("PUT", f"{ENDPOINT}/bucket/key", headers={"Content-Type": "text/plain"}, body=b"abc")
    headers = [(name, "text/html" if name == "Content-Type" else value) for name, value in request.headers]
    expect_error("SignatureDoesNotMatch", tampered(request, headers=headers))


def test_an_added_unsigned_amz_header_is_refused() -> None:
    request = sign_header("PUT", f"{ENDPOINT}/bucket/key", body=b"abc")
    error = expect_error("AccessDenied", tampered(request, headers=[*request.headers, ("x-amz-meta-evil", "1")]))
    assert "x-amz-meta-evil" in error.message


def test_header_values_are_trimmed_and_folded_before_signing() -> None:
    request = sign_header("PUT", f"{ENDPOINT}/bucket/key", headers={"Content-Type": "text/plain; charset=utf-8"})
    headers = [
        (name, "  text/plain;   charset=utf-8 " if name == "Content-Type" else value) for name, value in request.headers
    ]
    assert verify(tampered(request, headers=headers), SECRETS, signed_at(request))


def test_equivalent_percent_encodings_of_the_path_sign_alike() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/a~b")
    assert verify(tampered(request, path="/bucket/a%7Eb"), SECRETS, signed_at(request))
    assert verify(tampered(request, path="/bucket/a%7eb"), SECRETS, signed_at(request))


def test_the_path_is_not_encoded_twice() -> None:
    assert canonical_uri("/bucket/100%25/a%20b") == "/bucket/100%25/a%20b"
    assert canonical_uri("/bucket/a b") == "/bucket/a%20b"
    assert canonical_uri("/bucket/..//x") == "/bucket/..//x"


def test_canonical_query_sorts_and_encodes() -> None:
    assert canonical_query("prefix=J&max-keys=2") == "max-keys=2&prefix=J"
    assert canonical_query("uploads") == "uploads="
    assert canonical_query("b=2&a=%2f&a=1") == "a=%2F&a=1&b=2"
    assert canonical_query("k=a+b") == "k=a%2Bb"
    assert canonical_query("X-Amz-Signature=x&a=1", exclude="X-Amz-Signature") == "a=1"


def test_header_and_presigned_together_are_refused() -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    expect_error("InvalidArgument", tampered(request, query="X-Amz-Signature=00"))


def test_anonymous_request_is_access_denied() -> None:
    expect_error("AccessDenied", SignedRequest("GET", "/bucket/key", "", [("Host", "h")]), now=0)


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("AWS AKID:c2lnbmF0dXJl", "InvalidRequest"),
        ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request", "AuthorizationHeaderMalformed"),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/2013/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, "
            "Signature=00",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=x;host, Signature=00",
            "AuthorizationHeaderMalformed",
        ),
    ],
)
def test_malformed_authorization_header(authorization: str, code: str) -> None:
    request = SignedRequest(
        "GET", "/b/k", "", [("Host", "h"), ("x-amz-date", "20130524T000000Z"), ("Authorization", authorization)]
    )
    expect_error(code, request)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("X-Amz-Signature=00", "AuthorizationQueryParametersError"),
        (
            AWS_PRESIGNED.query.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801"),
            "AuthorizationQueryParametersError",
        ),
        (AWS_PRESIGNED.query.replace("X-Amz-Expires=86400", "X-Amz-Expires=-1"), "AuthorizationQueryParametersError"),
        (AWS_PRESIGNED.query.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"), "AuthorizationQueryParametersError"),
        (AWS_PRESIGNED.query + "&X-Amz-Date=20130524T000000Z", "AuthorizationQueryParametersError"),
        (AWS_PRESIGNED.query.replace("aeeed9", "beeed9"), "SignatureDoesNotMatch"),
    ],
)
def test_malformed_or_wrong_presigned_url(query: str, code: str) -> None:
    with pytest.raises(S3Error) as caught:
        verify(tampered(AWS_PRESIGNED, query=query), AWS_SECRETS, AWS_NOW)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "InvalidRequest"),
        ("abc", "InvalidArgument"),
        ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "NotImplemented"),
    ],
)
def test_bad_payload_hash_header(value: str | None, code: str) -> None:
    request = sign_header("GET", f"{ENDPOINT}/bucket/key")
    headers = [(name, v) for name, v in request.headers if name.lower() != "x-amz-content-sha256"]
    if value is not None:
        headers.append(("X-Amz-Content-SHA256", value))
    # The header is signed, so a change must be reported as what is wrong with it, not as a bad signature.
    expect_error(code, tampered(request, headers=headers))

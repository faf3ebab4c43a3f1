"""Object metadata gathered from a PUT's headers and given back on GET, as S3 does (sans-I/O)."""

from __future__ import annotations

import pytest

from dfsd.gateway.errors import S3Error
from dfsd.gateway.metadata import MAX_USER_METADATA, object_metadata, response_headers


def test_stored_headers_and_user_metadata_are_kept_others_are_not() -> None:
    meta = object_metadata(
        [
            ("Content-Type", "image/jpeg"),
            ("Cache-Control", "max-age=60"),
            ("X-Amz-Meta-Camera", "Leica"),
            ("x-amz-meta-camera", "M6"),
            ("Authorization", "AWS4-HMAC-SHA256 ..."),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-meta-", "no name"),
        ]
    )
    assert meta == {"content-type": "image/jpeg", "cache-control": "max-age=60", "x-amz-meta-camera": "Leica,M6"}
    assert sorted(response_headers(meta)) == sorted(meta.items())


def test_content_type_defaults_like_s3() -> None:
    assert response_headers({}) == [("content-type", "binary/octet-stream")]


def test_user_metadata_over_two_kib_is_refused() -> None:
    assert object_metadata([("x-amz-meta-a", "x" * (MAX_USER_METADATA - 1))])
    with pytest.raises(S3Error) as excinfo:
        object_metadata([("x-amz-meta-a", "x" * MAX_USER_METADATA)])
    assert excinfo.value.code == "MetadataTooLarge"

"""ETags, Content-MD5, Range and the conditional headers of a GET, as pure functions."""

from __future__ import annotations

import base64
import hashlib

import pytest

from dfsd.gateway.conditional import ByteRange, Conditions, Precondition, evaluate, http_date, parse_range
from dfsd.gateway.errors import S3Error
from dfsd.gateway.etags import check_content_md5, md5_etag, multipart_etag, parse_content_md5, unquote_etag


def test_single_part_etag_is_quoted_hex_md5() -> None:
    assert md5_etag(hashlib.md5(b"hello").digest()) == '"5d41402abc4b2a76b9719d911017c592"'


def test_multipart_etag_is_md5_of_part_md5s_and_count() -> None:
    parts = [b"a" * (5 << 20), b"b" * 100]
    digests = [hashlib.md5(part).digest() for part in parts]
    expected = hashlib.md5(digests[0] + digests[1]).hexdigest()
    assert multipart_etag(digests) == f'"{expected}-2"'


@pytest.mark.parametrize("value", ['"abc"', "abc", 'W/"abc"', ' "abc" '])
def test_unquote_etag(value: str) -> None:
    assert unquote_etag(value) == "abc"


def test_content_md5() -> None:
    digest = hashlib.md5(b"body").digest()
    assert parse_content_md5(base64.b64encode(digest).decode()) == digest
    check_content_md5(digest, hashlib.md5(b"body").digest())
    with pytest.raises(S3Error) as caught:
        check_content_md5(digest, hashlib.md5(b"other").digest())
    assert caught.value.code == "BadDigest"


@pytest.mark.parametrize("value", ["", "not base64", base64.b64encode(b"short").decode(), "x" * 24])
def test_malformed_content_md5_is_invalid_digest(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        parse_content_md5(value)
    assert caught.value.code == "InvalidDigest"


# --- Range ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, ByteRange(0, 10, 100)),
        ("bytes=90-", 100, ByteRange(90, 10, 100)),
        ("bytes=-10", 100, ByteRange(90, 10, 100)),
        ("bytes=-1000", 100, ByteRange(0, 100, 100)),
        ("bytes=50-1000", 100, ByteRange(50, 50, 100)),
        ("bytes=99-99", 100, ByteRange(99, 1, 100)),
        (None, 100, None),
        ("bytes=5-2", 100, None),  # invalid: ignored, whole object
        ("bytes=0-1,5-6", 100, None),  # several ranges: not supported, whole object
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


def test_content_range() -> None:
    assert ByteRange(0, 10, 100).content_range == "bytes 0-9/100"


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(S3Error) as caught:
        parse_range(header, size)
    assert caught.value.code == "InvalidRange"
    assert caught.value.status == 416


# --- preconditions ----------------------------------------------------------------------------------------------------

ETAG = '"abc"'
MODIFIED = 1_700_000_000.7
BEFORE = http_date(MODIFIED - 60)
AT = http_date(MODIFIED)
AFTER = http_date(MODIFIED + 60)


@pytest.mark.parametrize(
    ("conditions", "outcome"),
    [
        (Conditions(), Precondition.PROCEED),
        (Conditions(if_match='"abc"'), Precondition.PROCEED),
        (Conditions(if_match="abc"), Precondition.PROCEED),
        (Conditions(if_match='"x", "abc"'), Precondition.PROCEED),
        (Conditions(if_match="*"), Precondition.PROCEED),
        (Conditions(if_match='"other"'), Precondition.FAILED),
        (Conditions(if_none_match='"abc"'), Precondition.NOT_MODIFIED),
        (Conditions(if_none_match="*"), Precondition.NOT_MODIFIED),
        (Conditions(if_none_match='"other"'), Precondition.PROCEED),
        (Conditions(if_modified_since=BEFORE), Precondition.PROCEED),
        (Conditions(if_modified_since=AT), Precondition.NOT_MODIFIED),
        (Conditions(if_modified_since=AFTER), Precondition.NOT_MODIFIED),
        (Conditions(if_unmodified_since=BEFORE), Precondition.FAILED),
        (Conditions(if_unmodified_since=AT), Precondition.PROCEED),
        (Conditions(if_unmodified_since="not a date"), Precondition.PROCEED),
        (Conditions(if_modified_since="not a date"), Precondition.PROCEED),
        # S3's documented combinations:
        (Conditions(if_match='"abc"', if_unmodified_since=BEFORE), Precondition.PROCEED),
        (Conditions(if_none_match='"abc"', if_modified_since=BEFORE), Precondition.NOT_MODIFIED),
        (Conditions(if_none_match='"other"', if_modified_since=AFTER), Precondition.PROCEED),
        (Conditions(if_match='"other"', if_none_match='"other"'), Precondition.FAILED),
    ],
)
def test_get_preconditions(conditions: Conditions, outcome: Precondition) -> None:
    assert evaluate(conditions, ETAG, MODIFIED) is outcome


def test_if_none_match_on_a_write_fails_instead_of_not_modified() -> None:
    assert evaluate(Conditions(if_none_match="*"), ETAG, MODIFIED, method="PUT") is Precondition.FAILED


def test_if_modified_since_applies_to_reads_only() -> None:
    assert evaluate(Conditions(if_modified_since=AFTER), ETAG, MODIFIED, method="PUT") is Precondition.PROCEED


def test_http_date() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"

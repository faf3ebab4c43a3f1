"""Bucket names, keys, the dfsd name of an object, and listing pages (checked against a brute-force model)."""

from __future__ import annotations

import pytest
from dfsd.protocol.limits import MAX_NAME_BYTES
from hypothesis import given, settings
from hypothesis import strategies as st

from dfsd.gateway import listing, naming
from dfsd.gateway.errors import S3Error
from dfsd.gateway.listing import ListingBuilder, ObjectEntry, list_page


@pytest.mark.parametrize("name", ["abc", "my-bucket", "my.bucket.2", "a" * 63, "123", "x-y.z"])
def test_valid_bucket_names(name: str) -> None:
    assert naming.check_bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "My-Bucket",
        "-abc",
        "abc-",
        ".abc",
        "abc.",
        "a..b",
        "a_b",
        "a b",
        "a/b",
        "192.168.1.1",
        "xn--abc",
        "sthree-abc",
        "abc-s3alias",
        "abc--ol-s3",
        "ünï",
        "",
        "abc\x00",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as caught:
        naming.check_bucket_name(name)
    assert caught.value.code == "InvalidBucketName"
    assert caught.value.status == 400


@pytest.mark.parametrize("key", ["k", "../../etc/passwd", "./a/./b", "//x//", "/leading", "ü" * 512, "a" * 1024, " "])
def test_keys_are_opaque(key: str) -> None:
    assert naming.check_key(key) == key


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "InvalidArgument"),
        ("a\x00b", "InvalidArgument"),
        ("a" * 1025, "KeyTooLongError"),
        ("ü" * 513, "KeyTooLongError"),
        ("\udc80", "InvalidArgument"),
    ],
)
def test_invalid_keys(key: str, code: str) -> None:
    with pytest.raises(S3Error) as caught:
        naming.check_key(key)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", (None, None)),
        ("", (None, None)),
        ("/bucket", ("bucket", None)),
        ("/bucket/", ("bucket", None)),
        ("/bucket/key", ("bucket", "key")),
        ("/bucket/a%20b/c%2Fd", ("bucket", "a b/c/d")),
        ("/bucket//x", ("bucket", "/x")),
        ("/bucket/..%2F..%2Fetc", ("bucket", "../../etc")),
        ("/bucket/%C3%BC", ("bucket", "ü")),
        ("/bucket/a%00b", ("bucket", "a\x00b")),  # decoded here, refused by check_key
    ],
)
def test_path_style(path: str, expected: tuple[str | None, str | None]) -> None:
    assert naming.parse_path_style(path) == expected


def test_path_that_is_not_utf8_is_invalid_uri() -> None:
    with pytest.raises(S3Error) as caught:
        naming.parse_path_style("/bucket/%FF")
    assert caught.value.code == "InvalidURI"


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("b1.s3.local", "b1"),
        ("b1.s3.local:9000", "b1"),
        ("B1.S3.Local", "b1"),
        ("s3.local", None),
        ("s3.local:9000", None),
        ("other.host", None),
        ("127.0.0.1:9000", None),
        ("[::1]:9000", None),
    ],
)
def test_virtual_host_bucket(host: str, bucket: str | None) -> None:
    assert naming.virtual_host_bucket(host, "s3.local") == bucket


def test_dfs_name_round_trip() -> None:
    name = naming.dfs_name("bucket", "dir/file.txt")
    assert name == "bucket/dir/file.txt"
    assert naming.split_dfs_name(name) == ("bucket", "dir/file.txt")
    assert naming.dfs_prefix("bucket", "dir/") == "bucket/dir/"


@pytest.mark.parametrize("name", ["no-bucket", "bucket/", "Not_A_Bucket/key", "/key"])
def test_dfs_names_outside_any_bucket(name: str) -> None:
    assert naming.split_dfs_name(name) is None


def test_the_longest_s3_name_fits_a_dfsd_name() -> None:
    """A 63-character bucket and a 1024-byte key make 1088 bytes, the protocol's name limit: every S3 key fits."""
    assert naming.MAX_OBJECT_NAME_BYTES == MAX_NAME_BYTES == 1088
    assert naming.dfs_name("b" * 63, "k" * naming.MAX_KEY_BYTES) == "b" * 63 + "/" + "k" * 1024


# --- listing ----------------------------------------------------------------------------------------------------------


def entries(keys: list[str]) -> list[ObjectEntry]:
    return [ObjectEntry(key, len(key), '"e"', 0.0) for key in sorted(set(keys))]


def model(keys: list[str], prefix: str, delimiter: str | None, after: str) -> list[tuple[str, str]]:
    """Every item S3 would list, in order, by brute force: ('key', k) or ('prefix', p)."""
    items: list[tuple[str, str]] = []
    for key in sorted(set(keys)):
        if key <= after or not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common != after and ("prefix", common) not in items:
                items.append(("prefix", common))
        else:
            items.append(("key", key))
    return items


def items_of(result: listing.ListResult) -> list[tuple[str, str]]:
    found = [("key", e.key) for e in result.contents] + [("prefix", p) for p in result.common_prefixes]
    return sorted(found, key=lambda item: item[1])


KEYS = st.lists(st.text(alphabet="ab/ü", max_size=6), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    keys=KEYS,
    prefix=st.sampled_from(["", "a", "a/", "b/a"]),
    delimiter=st.sampled_from([None, "/", "a/"]),
    max_keys=st.integers(1, 6),
)
def test_pages_walked_by_marker_list_every_item_once(
    keys: list[str], prefix: str, delimiter: str | None, max_keys: int
) -> None:
    expected = model(keys, prefix, delimiter, "")
    seen: list[tuple[str, str]] = []
    after = ""
    for _ in range(len(expected) + 2):
        result = list_page(entries(keys), prefix=prefix, delimiter=delimiter, max_keys=max_keys, after=after)
        page = items_of(result)
        assert len(page) <= max_keys
        assert page == model(keys, prefix, delimiter, after)[:max_keys]
        seen += page
        if not result.is_truncated:
            break
        assert result.next_marker == page[-1][1]
        after = result.next_marker
    assert seen == expected


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"])), max_size=20))
def test_str_order_is_utf8_byte_order(keys: list[str]) -> None:
    assert sorted(keys) == sorted(keys, key=lambda key: key.encode("utf-8"))


def test_page_is_truncated_only_when_another_item_exists() -> None:
    exact = list_page(entries(["a", "b"]), max_keys=2)
    assert not exact.is_truncated and exact.next_marker == "b"
    more = list_page(entries(["a", "b", "c"]), max_keys=2)
    assert more.is_truncated and more.next_marker == "b"
    # Keys folded into the page's last common prefix are not "another item".
    folded = list_page(entries(["a/1", "a/2", "a/3"]), delimiter="/", max_keys=1)
    assert folded.common_prefixes == ["a/"] and not folded.is_truncated


def test_max_keys_zero_lists_nothing() -> None:
    builder = ListingBuilder(max_keys=0)
    assert not builder.add(ObjectEntry("a", 1, '"e"', 0))
    assert builder.result() == listing.ListResult()


@pytest.mark.parametrize(("value", "expected"), [(None, 1000), ("0", 0), ("5", 5), ("1000", 1000), ("5000", 1000)])
def test_max_keys(value: str | None, expected: int) -> None:
    assert listing.parse_max_keys(value) == expected


@pytest.mark.parametrize("value", ["-1", "ten", "", "1.5"])
def test_bad_max_keys(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        listing.parse_max_keys(value)
    assert caught.value.code == "InvalidArgument"


def test_encoding_type() -> None:
    assert listing.check_encoding_type(None) is None
    assert listing.check_encoding_type("url") == "url"
    with pytest.raises(S3Error):
        listing.check_encoding_type("base64")


@pytest.mark.parametrize("marker", ["", "a", "dir/ünï/ key+&", "x" * 1024])
def test_continuation_token_round_trip(marker: str) -> None:
    assert listing.v2_start(listing.continuation_token(marker), "ignored") == marker


def test_start_after_applies_without_a_token() -> None:
    assert listing.v2_start(None, "m") == "m"
    assert listing.v2_start(None, None) == ""


@pytest.mark.parametrize("token", ["!!!", "\u00e9", "_w"])
def test_forged_continuation_token(token: str) -> None:
    with pytest.raises(S3Error) as caught:
        listing.marker_of_token(token)
    assert caught.value.code == "InvalidArgument"

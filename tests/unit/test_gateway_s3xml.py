"""S3's XML: responses rendered by the gateway and read back by boto3's own parser; request bodies made by boto3 and
hostile ones (malformed, DOCTYPEs, entity bombs, oversized) parsed by ours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from gateway_clients import CapturingClient

from dfsd.gateway import s3xml
from dfsd.gateway.errors import S3_ERRORS, S3Error
from dfsd.gateway.listing import ListResult, ObjectEntry
from dfsd.gateway.s3xml import BucketEntry, DeleteFailure, Owner, PartEntry, UploadEntry, XmlBody, parse_xml

OWNER = Owner("owner-id-1", "alice")
WHEN = datetime(2026, 11, 29, 1, 2, 3, 456000, tzinfo=UTC)
ETAG = '"0123456789abcdef0123456789abcdef"'


def answer(body: bytes, call: str, status: int = 200, **params: Any) -> Any:
    """What boto3 makes of ``body`` as the response to ``call(**params)``."""
    client = CapturingClient()
    client.reply = (status, {"Content-Type": "application/xml"}, body)
    return getattr(client.client, call)(**params)


def test_iso8601_has_milliseconds_and_z() -> None:
    assert s3xml.iso8601(WHEN.timestamp()) == "2026-11-29T01:02:03.456Z"


@pytest.mark.parametrize("code", sorted(code for code, spec in S3_ERRORS.items() if spec.status >= 400))
def test_every_error_reaches_boto3_with_its_code(code: str) -> None:
    error = S3Error(code, "what to do <next> & why")
    body = s3xml.render_error(error, "/bucket/key", "REQ123")
    with pytest.raises(ClientError) as caught:
        answer(
            body,
            "head_bucket" if error.status >= 500 else "get_bucket_versioning",
            status=error.status,
            Bucket="bucket",
        )
    assert caught.value.response["Error"]["Code"] in (code, str(error.status))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == error.status


def test_error_body_fields() -> None:
    root = parse_xml(s3xml.render_error(S3Error("NoSuchKey"), "/b/k", "R1"))
    assert root.tag == "Error"
    assert [root.child_text(name) for name in ("Code", "Message", "Resource", "RequestId")] == [
        "NoSuchKey",
        S3_ERRORS["NoSuchKey"].message,
        "/b/k",
        "R1",
    ]


def test_unknown_error_code_is_a_bug() -> None:
    with pytest.raises(KeyError):
        S3Error("NoSuchThing")


def test_list_buckets() -> None:
    body = s3xml.render_list_buckets(OWNER, [BucketEntry("alpha", WHEN.timestamp()), BucketEntry("beta", 0)])
    result = answer(body, "list_buckets")
    assert [b["Name"] for b in result["Buckets"]] == ["alpha", "beta"]
    assert result["Buckets"][0]["CreationDate"] == WHEN
    assert result["Owner"] == {"ID": "owner-id-1", "DisplayName": "alice"}


KEYS = ["a&b<c>.txt", "space key", "plus+key", "ünï/cødé", "tab\tkey", "percent%41"]


def page(keys: list[str], prefixes: list[str] = (), truncated: bool = False) -> ListResult:  # type: ignore[assignment]
    entries = [ObjectEntry(key, 10 * i, ETAG, WHEN.timestamp()) for i, key in enumerate(keys)]
    return ListResult(entries, list(prefixes), truncated, (keys or list(prefixes))[-1] if truncated else None)


@pytest.mark.parametrize("encoding", [None, "url"])
def test_list_objects_v2_round_trips_through_boto3(encoding: str | None) -> None:
    result = page(KEYS, ["dir one/", "dir+two/"], truncated=True)
    body = s3xml.render_list_objects_v2(
        "bucket",
        result,
        prefix="",
        delimiter="/",
        max_keys=8,
        encoding_type=encoding,
        continuation_token="tok",
        start_after=None,
        next_continuation_token="next",
        owner=OWNER,
    )
    # boto3 asks for encoding-type=url itself and decodes what comes back; without it, it reads keys verbatim.
    parsed = answer(body, "list_objects_v2", Bucket="bucket")
    assert [item["Key"] for item in parsed["Contents"]] == KEYS
    assert [item["Prefix"] for item in parsed["CommonPrefixes"]] == ["dir one/", "dir+two/"]
    assert parsed["IsTruncated"] is True
    assert parsed["KeyCount"] == len(KEYS) + 2
    assert parsed["NextContinuationToken"] == "next"
    assert parsed["Contents"][1]["Size"] == 10
    assert parsed["Contents"][0]["ETag"] == ETAG
    assert parsed["Contents"][0]["LastModified"] == WHEN
    assert parsed["Contents"][0]["Owner"]["ID"] == "owner-id-1"


def test_list_objects_v1_next_marker_only_with_delimiter() -> None:
    result = page(["a", "b"], truncated=True)
    common = dict(prefix="", marker="", max_keys=2, encoding_type="url", owner=OWNER)
    with_delimiter = answer(
        s3xml.render_list_objects_v1("bucket", result, delimiter="/", **common), "list_objects", Bucket="bucket"
    )
    assert with_delimiter["NextMarker"] == "b"
    without = answer(
        s3xml.render_list_objects_v1("bucket", result, delimiter=None, **common), "list_objects", Bucket="bucket"
    )
    assert "NextMarker" not in without
    assert without["IsTruncated"] is True


def test_list_object_versions_for_an_unversioned_bucket() -> None:
    body = s3xml.render_list_object_versions(
        "bucket",
        page(["k1", "k 2"], truncated=True),
        prefix="",
        delimiter=None,
        key_marker="",
        max_keys=2,
        encoding_type="url",
        owner=OWNER,
    )
    parsed = answer(body, "list_object_versions", Bucket="bucket")
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in parsed["Versions"]] == [
        ("k1", "null", True),
        ("k 2", "null", True),
    ]
    assert parsed["NextKeyMarker"] == "k 2"


def test_bucket_location_and_versioning() -> None:
    assert (
        answer(s3xml.render_bucket_location("us-east-1"), "get_bucket_location", Bucket="b").get("LocationConstraint")
        is None
    )
    assert (
        answer(s3xml.render_bucket_location("eu-west-1"), "get_bucket_location", Bucket="b")["LocationConstraint"]
        == "eu-west-1"
    )
    assert "Status" not in answer(s3xml.render_bucket_versioning(), "get_bucket_versioning", Bucket="b")


def test_multipart_responses() -> None:
    created = answer(
        s3xml.render_initiate_multipart("b", "k&y", "up-1"), "create_multipart_upload", Bucket="b", Key="k&y"
    )
    assert (created["Bucket"], created["Key"], created["UploadId"]) == ("b", "k&y", "up-1")
    completed = answer(
        s3xml.render_complete_multipart("http://h/b/k", "b", "k", '"abc-2"'),
        "complete_multipart_upload",
        Bucket="b",
        Key="k",
        UploadId="up-1",
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]},
    )
    assert completed["ETag"] == '"abc-2"'
    parts = [PartEntry(1, ETAG, 5 << 20, WHEN.timestamp()), PartEntry(3, ETAG, 7, WHEN.timestamp())]
    listed = answer(
        s3xml.render_list_parts(
            "b", "k", "up-1", parts, part_number_marker=0, max_parts=2, is_truncated=True, owner=OWNER
        ),
        "list_parts",
        Bucket="b",
        Key="k",
        UploadId="up-1",
    )
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 << 20), (3, 7)]
    assert listed["NextPartNumberMarker"] == 3
    assert listed["IsTruncated"] is True
    uploads = [UploadEntry("k1", "u1", WHEN.timestamp(), OWNER), UploadEntry("k2", "u2", 0, OWNER)]
    body = s3xml.render_list_multipart_uploads(
        "b", uploads, prefix="", key_marker="", upload_id_marker="", max_uploads=2, is_truncated=True
    )
    parsed = answer(body, "list_multipart_uploads", Bucket="b")
    assert [(u["Key"], u["UploadId"]) for u in parsed["Uploads"]] == [("k1", "u1"), ("k2", "u2")]
    assert (parsed["NextKeyMarker"], parsed["NextUploadIdMarker"]) == ("k2", "u2")


def test_copy_results() -> None:
    copied = answer(
        s3xml.render_copy_result(ETAG, WHEN.timestamp()), "copy_object", Bucket="b", Key="k", CopySource="b/src"
    )
    assert copied["CopyObjectResult"]["ETag"] == ETAG
    part = answer(
        s3xml.render_copy_result(ETAG, WHEN.timestamp(), part=True),
        "upload_part_copy",
        Bucket="b",
        Key="k",
        CopySource="b/src",
        PartNumber=1,
        UploadId="u",
    )
    assert part["CopyPartResult"]["LastModified"] == WHEN


@pytest.mark.parametrize("quiet", [False, True])
def test_delete_result(quiet: bool) -> None:
    body = s3xml.render_delete_result(["gone", "a&b"], [DeleteFailure("locked", "AccessDenied", "no")], quiet=quiet)
    parsed = answer(body, "delete_objects", Bucket="b", Delete={"Objects": [{"Key": "gone"}]})
    assert [d["Key"] for d in parsed.get("Deleted", [])] == ([] if quiet else ["gone", "a&b"])
    assert parsed["Errors"] == [{"Key": "locked", "Code": "AccessDenied", "Message": "no"}]


# --- request bodies ---------------------------------------------------------------------------------------------------


def request_body(call: str, **params: Any) -> bytes:
    client = CapturingClient()
    client.reply = (200, {}, b"<x/>")
    try:
        getattr(client.client, call)(**params)
    except Exception:  # the canned reply need not parse; the request is what we want
        pass
    _, body = client.last()
    return body


def test_boto3_complete_multipart_body_parses() -> None:
    parts = [{"PartNumber": n, "ETag": f'"{n:032x}"'} for n in (1, 2, 10)]
    body = request_body(
        "complete_multipart_upload", Bucket="b", Key="k", UploadId="u", MultipartUpload={"Parts": parts}
    )
    parsed = s3xml.complete_multipart_parts(parse_xml(body))
    assert [(p.part_number, p.etag) for p in parsed] == [(1, f"{1:032x}"), (2, f"{2:032x}"), (10, f"{10:032x}")]


def test_boto3_delete_objects_body_parses() -> None:
    keys = ["a", "b&c", "<d>", "ünï"]
    body = request_body("delete_objects", Bucket="b", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    request = s3xml.delete_objects_request(parse_xml(body))
    assert request.keys == keys
    assert request.quiet


def complete(parts: str) -> str:
    return f'<CompleteMultipartUpload xmlns="{s3xml.S3_NAMESPACE}">{parts}</CompleteMultipartUpload>'


def part(number: object, etag: str = '"e"') -> str:
    return f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (complete(part(2) + part(1)), "InvalidPartOrder"),
        (complete(part(1) + part(1)), "InvalidPartOrder"),
        (complete(part(0)), "InvalidArgument"),
        (complete(part(10001)), "InvalidArgument"),
        (complete(part("x")), "MalformedXML"),
        (complete(""), "MalformedXML"),
        (complete("<Part><PartNumber>1</PartNumber></Part>"), "MalformedXML"),
        (complete("<Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>e</ETag></Part>"), "MalformedXML"),
        (complete("<Other/>"), "MalformedXML"),
        ("<Delete/>", "MalformedXML"),
        ("not xml at all", "MalformedXML"),
        (complete(part(1))[:-5], "MalformedXML"),
        ("", "MalformedXML"),
    ],
)
def test_bad_complete_multipart_bodies(body: str, code: str) -> None:
    with pytest.raises(S3Error) as caught:
        s3xml.complete_multipart_parts(parse_xml(body.encode()))
    assert caught.value.code == code


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&xxe;</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        '<!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/x.dtd"><Delete><Object><Key>k</Key></Object></Delete>',
        "<Delete><Object><Key>&undefined;</Key></Object></Delete>",
        "<Delete>" + "<a>" * 20 + "</a>" * 20 + "</Delete>",
        "<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>",
        "<Delete><Object><VersionId>v</VersionId></Object></Delete>",
        "<Delete>" + "<Object><Key>k</Key></Object>" * 1001 + "</Delete>",
        "<Delete></Delete>",
    ],
    ids=[
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "undefined-entity",
        "deep",
        "quiet",
        "no-key",
        "1001-keys",
        "no-keys",
    ],
)
def test_hostile_delete_bodies_are_malformed_xml(body: str) -> None:
    with pytest.raises(S3Error) as caught:
        s3xml.delete_objects_request(parse_xml(body.encode()))
    assert caught.value.code == "MalformedXML"


def test_predefined_and_character_entities_still_work() -> None:
    body = b"<Delete><Object><Key>a&amp;b&#x41;&lt;</Key></Object></Delete>"
    assert s3xml.delete_objects_request(parse_xml(body)).keys == ["a&bA<"]


def test_body_over_the_limit_is_refused_as_it_arrives() -> None:
    parser = XmlBody(max_bytes=100)
    parser.feed(b"<Delete>" + b" " * 80)
    with pytest.raises(S3Error) as caught:
        parser.feed(b" " * 20)
    assert caught.value.code == "MalformedXML"


def test_too_many_elements_are_refused() -> None:
    body = "<Delete>" + "<Object><Key>k</Key></Object>" * (s3xml.MAX_XML_ELEMENTS // 2 + 1) + "</Delete>"
    with pytest.raises(S3Error) as caught:
        parse_xml(body.encode())
    assert caught.value.code == "MalformedXML"


def test_body_fed_byte_by_byte_parses_alike() -> None:
    body = complete(part(1, '"a"') + part(2, '"b"')).encode()
    parser = XmlBody()
    for index in range(len(body)):
        parser.feed(body[index : index + 1])
    assert s3xml.complete_multipart_parts(parser.close()) == s3xml.complete_multipart_parts(parse_xml(body))

"""The XML S3 speaks: response bodies rendered from plain data, and the two request bodies parsed safely.

Theory of operation. Responses are small documents in S3's namespace, written as text with every value escaped;
nothing here knows where the data came from (the server asks the manager and passes plain records in). Times are
seconds since the epoch and are written as S3 writes them (``2013-05-24T00:00:00.000Z``). Listing responses take a
``listing.ListResult`` and honour ``encoding-type=url`` (keys percent-encoded, which is how clients fetch keys that XML
1.0 cannot carry).

Requests with XML bodies (CompleteMultipartUpload, DeleteObjects) come from anyone who can sign, so they are parsed
by ``XmlBody``: expat fed incrementally, with any DOCTYPE refused (so no entity can be declared: no "billion laughs",
no external entities), and limits on bytes, elements and depth checked as the bytes arrive. Anything else wrong is
``MalformedXML``; wrong part lists are ``InvalidPart``/``InvalidPartOrder`` as S3 answers them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote
from xml.parsers import expat
from xml.sax.saxutils import escape

from .errors import S3Error
from .listing import ListResult

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Largest XML request body. A CompleteMultipartUpload of 10,000 parts with checksums is about 2 MB, a DeleteObjects of
# 1,000 keys of 1024 bytes each about 1.2 MB (6 MB if every byte were an escaped '&'): 8 MiB admits both.
MAX_XML_BODY = 8 * 1024 * 1024

# Elements in one request body: 10,000 parts of up to 5 elements each, plus the root.
MAX_XML_ELEMENTS = 60_000

# Nesting: S3's request documents are three levels deep; a little slack, no recursion bombs.
MAX_XML_DEPTH = 8

MAX_PARTS = 10_000  # parts in one multipart upload (S3's limit), numbered 1..MAX_PARTS
MAX_DELETE_KEYS = 1000  # keys in one DeleteObjects (S3's limit)


def iso8601(seconds: float) -> str:
    """S3's timestamp format for XML bodies, in UTC with milliseconds."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _element(name: str, value: object) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"


def _document(root: str, body: Iterable[str], namespace: bool = True) -> bytes:
    attributes = f' xmlns="{S3_NAMESPACE}"' if namespace else ""
    return (XML_DECLARATION + f"<{root}{attributes}>" + "".join(body) + f"</{root}>").encode("utf-8")


# --- errors -----------------------------------------------------------------------------------------------------------


def render_error(error: S3Error, resource: str, request_id: str) -> bytes:
    """The body of an error response: Code, Message, Resource, RequestId (S3 puts no namespace on it)."""
    parts = [
        _element("Code", error.code),
        _element("Message", error.message),
        _element("Resource", resource),
        _element("RequestId", request_id),
    ]
    return _document("Error", parts, namespace=False)


# --- records the server passes in -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str

    def xml(self, element: str = "Owner") -> str:
        return f"<{element}>{_element('ID', self.id)}{_element('DisplayName', self.display_name)}</{element}>"


@dataclass(frozen=True)
class BucketEntry:
    name: str
    created: float


@dataclass(frozen=True)
class PartEntry:
    part_number: int
    etag: str  # quoted, as returned to clients
    size: int
    last_modified: float


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: float
    owner: Owner


# --- buckets ----------------------------------------------------------------------------------------------------------


def render_list_buckets(owner: Owner, buckets: Sequence[BucketEntry]) -> bytes:
    entries = "".join(
        f"<Bucket>{_element('Name', b.name)}{_element('CreationDate', iso8601(b.created))}</Bucket>" for b in buckets
    )
    return _document("ListAllMyBucketsResult", [owner.xml(), f"<Buckets>{entries}</Buckets>"])


def render_bucket_location(region: str) -> bytes:
    """GetBucketLocation: S3 answers an empty constraint for us-east-1, the region's name otherwise."""
    value = "" if region == "us-east-1" else escape(region)
    return (XML_DECLARATION + f'<LocationConstraint xmlns="{S3_NAMESPACE}">{value}</LocationConstraint>').encode()


def render_bucket_versioning() -> bytes:
    """GetBucketVersioning for a bucket that never had versioning: an empty configuration (no Status)."""
    return _document("VersioningConfiguration", [])


def render_owner_only_acl(owner: Owner) -> bytes:
    """GetBucketAcl and GetObjectAcl: the one grant dfsd has, FULL_CONTROL to the bucket's owner (S3's answer for a
    bucket whose ACLs are disabled, object ownership "BucketOwnerEnforced", the default since 2023)."""
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    grantee = (
        f'<Grantee xmlns:xsi="{xsi}" xsi:type="CanonicalUser">'
        f"{_element('ID', owner.id)}{_element('DisplayName', owner.display_name)}</Grantee>"
    )
    grant = f"<Grant>{grantee}{_element('Permission', 'FULL_CONTROL')}</Grant>"
    return _document("AccessControlPolicy", [owner.xml(), f"<AccessControlList>{grant}</AccessControlList>"])


# --- listings ---------------------------------------------------------------------------------------------------------


Encode = Callable[[str], str]


def _url_encode(text: str) -> str:
    return quote(text, safe="/")


def _verbatim(text: str) -> str:
    return text


def _encoder(encoding_type: str | None) -> Encode:
    """How names are written: percent-encoded for ``encoding-type=url``, verbatim (XML-escaped) otherwise."""
    return _url_encode if encoding_type == "url" else _verbatim


def _contents(result: ListResult, encode: Encode, owner: Owner | None, element: str = "Contents") -> str:
    out = []
    for entry in result.contents:
        fields = [
            _element("Key", encode(entry.key)),
            _element("LastModified", iso8601(entry.last_modified)),
            _element("ETag", entry.etag),
            _element("Size", entry.size),
            _element("StorageClass", "STANDARD"),
        ]
        if element == "Version":
            fields[1:1] = [_element("VersionId", "null"), _element("IsLatest", True)]
        if owner is not None:
            fields.append(owner.xml())
        out.append(f"<{element}>{''.join(fields)}</{element}>")
    out += [f"<CommonPrefixes>{_element('Prefix', encode(p))}</CommonPrefixes>" for p in result.common_prefixes]
    return "".join(out)


def _common_fields(
    bucket: str, prefix: str, delimiter: str | None, max_keys: int, encoding_type: str | None, encode: Encode
) -> list[str]:
    """Name, Prefix, Delimiter, MaxKeys and EncodingType; ``prefix`` as it is to appear (encoded or not)."""
    fields = [_element("Name", bucket), _element("Prefix", prefix)]
    if delimiter:
        fields.append(_element("Delimiter", encode(delimiter)))
    fields.append(_element("MaxKeys", max_keys))
    if encoding_type:
        fields.append(_element("EncodingType", encoding_type))
    return fields


def render_list_objects_v1(
    bucket: str,
    result: ListResult,
    *,
    prefix: str,
    delimiter: str | None,
    marker: str,
    max_keys: int,
    encoding_type: str | None,
    owner: Owner,
) -> bytes:
    """ListObjects (V1). NextMarker appears only when truncated with a delimiter, as in S3.

    encoding-type=url encodes Delimiter, Marker, NextMarker and the keys but not Prefix, which V1 (unlike V2 and
    ListObjectVersions) returns as sent: botocore decodes only those, so an encoded Prefix reached boto3's callers
    still encoded (``%0A`` for a newline)."""
    encode = _encoder(encoding_type)
    fields = _common_fields(bucket, prefix, delimiter, max_keys, encoding_type, encode)
    fields.insert(2, _element("Marker", encode(marker)))
    if result.is_truncated and delimiter and result.next_marker is not None:
        fields.append(_element("NextMarker", encode(result.next_marker)))
    fields.append(_element("IsTruncated", result.is_truncated))
    fields.append(_contents(result, encode, owner))
    return _document("ListBucketResult", fields)


def render_list_objects_v2(
    bucket: str,
    result: ListResult,
    *,
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    encoding_type: str | None,
    continuation_token: str | None,
    start_after: str | None,
    next_continuation_token: str | None,
    owner: Owner | None,
) -> bytes:
    """ListObjectsV2; ``owner`` only when fetch-owner=true. KeyCount counts contents and common prefixes."""
    encode = _encoder(encoding_type)
    fields = _common_fields(bucket, encode(prefix), delimiter, max_keys, encoding_type, encode)
    fields.append(_element("KeyCount", len(result.contents) + len(result.common_prefixes)))
    if continuation_token is not None:
        fields.append(_element("ContinuationToken", continuation_token))
    if start_after:
        fields.append(_element("StartAfter", encode(start_after)))
    if next_continuation_token is not None:
        fields.append(_element("NextContinuationToken", next_continuation_token))
    fields.append(_element("IsTruncated", result.is_truncated))
    fields.append(_contents(result, encode, owner))
    return _document("ListBucketResult", fields)


def render_list_object_versions(
    bucket: str,
    result: ListResult,
    *,
    prefix: str,
    delimiter: str | None,
    key_marker: str,
    max_keys: int,
    encoding_type: str | None,
    owner: Owner,
) -> bytes:
    """ListObjectVersions for an unversioned bucket: each object once, VersionId ``null``, IsLatest true."""
    encode = _encoder(encoding_type)
    fields = _common_fields(bucket, encode(prefix), delimiter, max_keys, encoding_type, encode)
    fields[2:2] = [_element("KeyMarker", encode(key_marker)), _element("VersionIdMarker", "")]
    if result.is_truncated and result.next_marker is not None:
        fields += [_element("NextKeyMarker", encode(result.next_marker)), _element("NextVersionIdMarker", "null")]
    fields.append(_element("IsTruncated", result.is_truncated))
    fields.append(_contents(result, encode, owner, element="Version"))
    return _document("ListVersionsResult", fields)


# --- multipart --------------------------------------------------------------------------------------------------------


def render_initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    fields = [_element("Bucket", bucket), _element("Key", key), _element("UploadId", upload_id)]
    return _document("InitiateMultipartUploadResult", fields)


def render_complete_multipart(location: str, bucket: str, key: str, etag: str) -> bytes:
    fields = [_element("Location", location), _element("Bucket", bucket), _element("Key", key), _element("ETag", etag)]
    return _document("CompleteMultipartUploadResult", fields)


def render_list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[PartEntry],
    *,
    part_number_marker: int,
    max_parts: int,
    is_truncated: bool,
    owner: Owner,
) -> bytes:
    fields = [
        _element("Bucket", bucket),
        _element("Key", key),
        _element("UploadId", upload_id),
        owner.xml("Initiator"),
        owner.xml(),
        _element("StorageClass", "STANDARD"),
        _element("PartNumberMarker", part_number_marker),
    ]
    if parts:
        fields.append(_element("NextPartNumberMarker", parts[-1].part_number))
    fields += [_element("MaxParts", max_parts), _element("IsTruncated", is_truncated)]
    for part in parts:
        fields.append(
            "<Part>"
            + _element("PartNumber", part.part_number)
            + _element("LastModified", iso8601(part.last_modified))
            + _element("ETag", part.etag)
            + _element("Size", part.size)
            + "</Part>"
        )
    return _document("ListPartsResult", fields)


def render_list_multipart_uploads(
    bucket: str,
    uploads: Sequence[UploadEntry],
    *,
    prefix: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
    is_truncated: bool,
) -> bytes:
    fields = [
        _element("Bucket", bucket),
        _element("KeyMarker", key_marker),
        _element("UploadIdMarker", upload_id_marker),
    ]
    if is_truncated and uploads:
        fields += [_element("NextKeyMarker", uploads[-1].key), _element("NextUploadIdMarker", uploads[-1].upload_id)]
    fields += [_element("Prefix", prefix), _element("MaxUploads", max_uploads), _element("IsTruncated", is_truncated)]
    for upload in uploads:
        fields.append(
            "<Upload>"
            + _element("Key", upload.key)
            + _element("UploadId", upload.upload_id)
            + upload.owner.xml("Initiator")
            + upload.owner.xml()
            + _element("StorageClass", "STANDARD")
            + _element("Initiated", iso8601(upload.initiated))
            + "</Upload>"
        )
    return _document("ListMultipartUploadsResult", fields)


# --- objects ----------------------------------------------------------------------------------------------------------


def render_copy_result(etag: str, last_modified: float, *, part: bool = False) -> bytes:
    """CopyObjectResult, or CopyPartResult for UploadPartCopy."""
    fields = [_element("LastModified", iso8601(last_modified)), _element("ETag", etag)]
    return _document("CopyPartResult" if part else "CopyObjectResult", fields)


@dataclass(frozen=True)
class DeleteFailure:
    key: str
    code: str
    message: str


def render_delete_result(deleted: Sequence[str], failures: Sequence[DeleteFailure], *, quiet: bool) -> bytes:
    """DeleteObjects' answer; in quiet mode only the failures are listed."""
    fields = [] if quiet else [f"<Deleted>{_element('Key', key)}</Deleted>" for key in deleted]
    fields += [
        f"<Error>{_element('Key', f.key)}{_element('Code', f.code)}{_element('Message', f.message)}</Error>"
        for f in failures
    ]
    return _document("DeleteResult", fields)


# --- parsing request bodies -------------------------------------------------------------------------------------------


@dataclass
class XmlNode:
    """One element: its local name (namespace dropped), its text, its children in order."""

    tag: str
    text: str = ""
    children: list[XmlNode] = field(default_factory=list)

    def child_text(self, tag: str) -> str | None:
        found = [child for child in self.children if child.tag == tag]
        if len(found) > 1:
            raise S3Error("MalformedXML", f"<{self.tag}> holds more than one <{tag}>.")
        return found[0].text if found else None


class _Refused(Exception):
    """Raised inside an expat handler to stop parsing; carries the S3Error to report."""

    def __init__(self, error: S3Error) -> None:
        self.error = error


class XmlBody:
    """A request's XML body, parsed as it arrives: ``feed`` each piece, then ``close`` for the root element.

    Refuses (``MalformedXML``) any DOCTYPE, so no entity can be declared or expanded, and any body over
    ``MAX_XML_BODY`` bytes, ``MAX_XML_ELEMENTS`` elements or ``MAX_XML_DEPTH`` levels, as soon as the limit is passed.
    """

    def __init__(self, max_bytes: int = MAX_XML_BODY) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._elements = 0
        self._stack: list[XmlNode] = []
        self._root: XmlNode | None = None
        self._text: list[str] = []
        parser = expat.ParserCreate()
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse_doctype
        parser.EntityDeclHandler = self._refuse_doctype
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._characters
        self._parser = parser

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise S3Error("MalformedXML", f"The XML body is over {self._max_bytes} bytes.")
        self._parse(data, final=False)

    def close(self) -> XmlNode:
        self._parse(b"", final=True)
        if self._root is None:
            raise S3Error("MalformedXML", "The XML body is empty.")
        return self._root

    def _parse(self, data: bytes, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except _Refused as refused:
            raise refused.error from None
        except expat.ExpatError as error:
            raise S3Error("MalformedXML", f"The XML body is not well-formed: {error}.") from None

    def _refuse_doctype(self, *_: object) -> None:
        raise _Refused(S3Error("MalformedXML", "The XML body holds a DOCTYPE or entity declaration; none is allowed."))

    def _start(self, name: str, _attributes: object) -> None:
        self._elements += 1
        if self._elements > MAX_XML_ELEMENTS or len(self._stack) >= MAX_XML_DEPTH:
            raise _Refused(S3Error("MalformedXML", "The XML body has too many elements or is nested too deeply."))
        node = XmlNode(name.rpartition(":")[2])
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self._root = node
        self._stack.append(node)
        self._text = []

    def _characters(self, data: str) -> None:
        self._text.append(data)

    def _end(self, _name: str) -> None:
        node = self._stack.pop()
        if not node.children:
            node.text = "".join(self._text)
        self._text = []


def parse_xml(body: bytes) -> XmlNode:
    """A whole body at once (what tests and small bodies use)."""
    parser = XmlBody()
    parser.feed(body)
    return parser.close()


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str  # as the client sent it, quotes stripped


_PART_NUMBER = re.compile(r"\d{1,5}")


def complete_multipart_parts(root: XmlNode) -> list[CompletedPart]:
    """The parts a CompleteMultipartUpload names, checked: 1..10,000 of them, numbers ascending (InvalidPartOrder)."""
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML", f"Expected <CompleteMultipartUpload>, not <{root.tag}>.")
    parts = []
    for node in root.children:
        if node.tag != "Part":
            raise S3Error("MalformedXML", f"<CompleteMultipartUpload> holds <{node.tag}>; only <Part> belongs there.")
        number, etag = node.child_text("PartNumber"), node.child_text("ETag")
        if number is None or etag is None or not _PART_NUMBER.fullmatch(number.strip()):
            raise S3Error("MalformedXML", "Each <Part> needs a <PartNumber> (1-10000) and an <ETag>.")
        part_number = int(number)
        if not 1 <= part_number <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}.")
        parts.append(CompletedPart(part_number, etag.strip().strip('"')))
    if not parts:
        raise S3Error("MalformedXML", "A CompleteMultipartUpload must name at least one part.")
    if any(a.part_number >= b.part_number for a, b in itertools.pairwise(parts)):
        raise S3Error(
            "InvalidPartOrder", "The list of parts was not in ascending order; list each part once, in order."
        )
    return parts


@dataclass(frozen=True)
class DeleteRequest:
    objects: list[tuple[str, str | None]]  # (key, VersionId or None), as listed
    quiet: bool

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.objects]


def delete_objects_request(root: XmlNode) -> DeleteRequest:
    """The keys a DeleteObjects names (1..1000), each with its VersionId if it names one, and whether it is quiet."""
    if root.tag != "Delete":
        raise S3Error("MalformedXML", f"Expected <Delete>, not <{root.tag}>.")
    objects: list[tuple[str, str | None]] = []
    quiet = False
    for node in root.children:
        if node.tag == "Quiet":
            if node.text.strip() not in ("true", "false"):
                raise S3Error("MalformedXML", "<Quiet> must be true or false.")
            quiet = node.text.strip() == "true"
        elif node.tag == "Object":
            key = node.child_text("Key")
            if key is None:
                raise S3Error("MalformedXML", "Each <Object> needs a <Key>.")
            objects.append((key, node.child_text("VersionId")))
        else:
            raise S3Error("MalformedXML", f"<Delete> holds <{node.tag}>; only <Object> and <Quiet> belong there.")
    if not 1 <= len(objects) <= MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"A DeleteObjects request names 1 to {MAX_DELETE_KEYS} keys, not {len(objects)}.")
    return DeleteRequest(objects, quiet)

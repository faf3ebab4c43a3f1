"""The S3 API: each operation a handler over ``Store``, chosen by method, bucket, key and sub-resource.

Theory of operation. ``S3Api.handle`` authenticates the request (``auth.authenticate``; an ``--anonymous`` gateway
takes unsigned requests as the anonymous user), finds the bucket and key (path-style ``/bucket/key`` or
virtual-host ``bucket.DOMAIN``), checks that the caller owns the bucket, and runs the operation. Handlers raise
``S3Error``; errors of the cluster (``DfsError``) are mapped to S3 codes by ``s3_error_of`` (the table in the README),
and the server renders either as S3's XML error body. Bodies stream (``bodies.CheckedBody``); downloads stream from
the client library to the socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, quote, unquote

from dfsd.client import (
    BadRequest,
    BucketExists,
    BucketNotEmpty,
    BucketNotYours,
    BucketOwnedByYou,
    ChecksumMismatch,
    DfsError,
    FileNotFound,
    FileUnavailable,
    InvalidPart,
    NameExists,
    NoSuchBucket,
    NoSuchUpload,
    ServersUnavailable,
    StorageFull,
)

from .. import conditional, listing, metadata, s3xml
from ..auth import authenticate
from ..checksums import ChecksumVerifier
from ..errors import S3Error
from ..etags import check_content_md5, parse_content_md5
from ..naming import check_bucket_name, check_key, parse_path_style, virtual_host_bucket
from ..sigv4 import Authorised
from .bodies import CheckedBody, Md5Stream, declared_checksum
from .credentials import ANONYMOUS, Credentials
from .http import HttpRequest
from .store import Bucket, ObjectInfo, Store

# How long a client should wait before retrying when the cluster is unavailable (503): a node's heartbeat timeout.
RETRY_AFTER_SECONDS = 3

# Request IDs (S3's 16 hex digits): this process's random half, then a count. Unique across gateways and restarts
# without a random draw per request.
REQUEST_ID_PREFIX = secrets.token_hex(4).upper()
_request_numbers = itertools.count()

# The largest XML body read whole (DeleteObjects, CompleteMultipartUpload).
MAX_XML_BODY = s3xml.MAX_XML_BODY

# The canned ACLs that grant nothing beyond the owner's FULL_CONTROL: the only ones a PutBucketAcl or PutObjectAcl
# may ask for.
OWNER_ONLY_CANNED_ACLS = frozenset({"private", "bucket-owner-full-control"})

# Headers of an object that GetObject's response-* query parameters may override.
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


# The manager's bucket and multipart errors and the S3 codes they are answered with.
BUCKET_ERRORS: tuple[tuple[type[DfsError], str], ...] = (
    (NoSuchBucket, "NoSuchBucket"),
    (BucketOwnedByYou, "BucketAlreadyOwnedByYou"),
    (BucketExists, "BucketAlreadyExists"),
    (BucketNotEmpty, "BucketNotEmpty"),
    (BucketNotYours, "AccessDenied"),
    (NoSuchUpload, "NoSuchUpload"),
    (InvalidPart, "InvalidPart"),
)


def s3_error_of(error: DfsError) -> S3Error:
    """The S3 error a cluster error is answered with (README, "Error mapping")."""
    if isinstance(error, FileNotFound):
        return S3Error("NoSuchKey")
    for kind, code in BUCKET_ERRORS:
        if isinstance(error, kind):
            return S3Error(code, error.message)
    if isinstance(error, ServersUnavailable | FileUnavailable):
        return S3Error("ServiceUnavailable", error.message)
    if isinstance(error, NameExists):
        return S3Error("OperationAborted", error.message)
    if isinstance(error, BadRequest):
        return S3Error("InvalidArgument", error.message)
    if isinstance(error, StorageFull):
        return S3Error("EntityTooLarge", error.message)
    if isinstance(error, ChecksumMismatch):
        return S3Error("BadDigest", error.message)
    return S3Error("InternalError", error.message)


Handler = Callable[["S3Api", HttpRequest, "Context"], Awaitable[None]]


class Context:
    """One request's caller, bucket and key, as the handlers need them."""

    def __init__(self, user: str, auth: Authorised | None, bucket: str | None, key: str | None, request_id: str):
        self.user = user
        self.auth = auth
        self.bucket = bucket
        self.key = key
        self.request_id = request_id

    @property
    def bucket_name(self) -> str:
        assert self.bucket is not None
        return self.bucket

    @property
    def key_name(self) -> str:
        assert self.key is not None
        return self.key


class S3Api:
    def __init__(
        self, store: Store, credentials: Credentials, *, anonymous: bool, region: str = "us-east-1", domain: str = ""
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.anonymous = anonymous
        self.region = region
        self.domain = domain

    async def handle(self, request: HttpRequest) -> None:
        request_id = f"{REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08X}"
        context: Context | None = None
        try:
            context = self._context(request, request_id)
            handler = self._route(request, context)
            request.operation = f"s3.{handler.__name__}"
            if context.key is not None:
                _check_version_id(request.params.get("versionId"))
            if context.bucket is not None and handler is not S3Api.create_bucket:
                await self._check_owner(context)
            await handler(self, request, context)
        except DfsError as error:
            await self.fail(request, s3_error_of(error), _resource(request, context), request_id)
        except S3Error as error:
            await self.fail(request, error, _resource(request, context), request_id)

    async def fail(self, request: HttpRequest, error: S3Error, resource: str, request_id: str) -> None:
        if request.response_started:
            raise error  # mid-download: only cutting the connection tells the client
        headers = [("content-type", "application/xml"), ("x-amz-request-id", request_id)]
        if error.code == "ServiceUnavailable":
            headers.append(("retry-after", str(RETRY_AFTER_SECONDS)))
        body = b"" if request.method == "HEAD" else s3xml.render_error(error, resource, request_id)
        if request.body_unread:
            headers.append(("connection", "close"))  # the rest of the body is not read: this connection is done
        await request.respond(error.status, headers, body)

    def _context(self, request: HttpRequest, request_id: str) -> Context:
        host = request.header("host") or ""
        bucket = virtual_host_bucket(host, self.domain) if self.domain else None
        auth: Authorised | None = None
        if self.anonymous and not _is_signed(request):
            user = ANONYMOUS
        else:
            auth = authenticate(request.signed, self.credentials.secret, time.time(), virtual_host_bucket=bucket)
            found = self.credentials.user(auth.access_key)
            assert found is not None
            user = found.name
        if bucket is not None:
            path = request.raw_path[1:]
            key = unquote(path) if path else None
        else:
            bucket, key = parse_path_style(request.raw_path)
        if bucket is not None:
            check_bucket_name(bucket)
        if key is not None:
            check_key(key)
        return Context(user, auth, bucket, key, request_id)

    def _route(self, request: HttpRequest, context: Context) -> Handler:
        """The handler of a request: by its scope (service, bucket or object), method and S3 sub-resource.

        A sub-resource operation dfsd does not implement (``?tagging``, ``?acl``, PUT ``?versioning`` ...) is
        ``NotImplemented``, never the plain operation: a PutObjectTagging taken as a PutObject would replace the
        object with the tagging XML, and a DeleteBucketCors taken as a DeleteBucket would delete the bucket."""
        method = request.method
        if context.bucket is None:
            if method == "GET":
                return S3Api.list_buckets
            raise S3Error("MethodNotAllowed")
        params = request.params
        subresource = _subresource(params)
        routes = BUCKET_ROUTES if context.key is None else OBJECT_ROUTES
        handler = routes.get((method, subresource))
        if handler is S3Api.list_objects_v1 and params.get("list-type") == "2":
            return S3Api.list_objects_v2
        if handler is S3Api.put_object and request.header("x-amz-copy-source"):
            return S3Api.copy_object
        if handler is not None:
            return handler
        if subresource is not None:
            raise S3Error(
                "NotImplemented", f"dfsd does not implement the ?{subresource} operations (README, S3 section)."
            )
        raise S3Error("MethodNotAllowed")

    async def _check_owner(self, context: Context) -> Bucket:
        bucket = await self.store.bucket(context.bucket_name)
        if bucket is None:
            raise S3Error("NoSuchBucket", f"The bucket {context.bucket!r} does not exist; create it first.")
        if bucket.owner != context.user:
            raise S3Error("AccessDenied", f"The bucket {context.bucket!r} belongs to another user.")
        return bucket

    # --- buckets -------------------------------------------------------------------------------------------------

    async def list_buckets(self, request: HttpRequest, context: Context) -> None:
        buckets = await self.store.buckets(context.user)
        entries = [s3xml.BucketEntry(bucket.name, bucket.created) for bucket in sorted(buckets, key=_name)]
        await _xml(request, context, s3xml.render_list_buckets(_owner(context.user), entries))

    async def create_bucket(self, request: HttpRequest, context: Context) -> None:
        await request.read_small(MAX_XML_BODY)  # a CreateBucketConfiguration; any region is this one
        await self.store.create_bucket(context.bucket_name, context.user)
        await request.respond(200, [*_ids(context), ("location", "/" + context.bucket_name)])

    async def head_bucket(self, request: HttpRequest, context: Context) -> None:
        await request.respond(200, [*_ids(context), ("x-amz-bucket-region", self.region)])

    async def delete_bucket(self, request: HttpRequest, context: Context) -> None:
        await self.store.delete_bucket(context.bucket_name, context.user)
        await request.respond(204, _ids(context))

    async def get_location(self, request: HttpRequest, context: Context) -> None:
        await _xml(request, context, s3xml.render_bucket_location(self.region))

    async def get_versioning(self, request: HttpRequest, context: Context) -> None:
        await _xml(request, context, s3xml.render_bucket_versioning())

    # --- ACLs: only the owner's ----------------------------------------------------------------------------------

    async def get_acl(self, request: HttpRequest, context: Context) -> None:
        """GetBucketAcl and GetObjectAcl (the object must exist): FULL_CONTROL to the bucket's owner, the caller."""
        if context.key is not None:
            await self.store.stat(context.bucket_name, context.key_name)
        await _xml(request, context, s3xml.render_owner_only_acl(_owner(context.user)))

    async def put_acl(self, request: HttpRequest, context: Context) -> None:
        """PutBucketAcl and PutObjectAcl: taken when they ask for what every bucket and object has already (the canned
        ``private`` or ``bucket-owner-full-control``); any other grant is AccessControlListNotSupported, as S3 answers
        for a bucket whose ACLs are disabled."""
        canned = request.header("x-amz-acl")
        grants = [name for name, _ in request.headers if name.startswith("x-amz-grant-")]
        if canned not in OWNER_ONLY_CANNED_ACLS or grants or await request.read_small(MAX_XML_BODY):
            raise S3Error(
                "AccessControlListNotSupported",
                "dfsd buckets allow no ACLs: only their owner reaches them (x-amz-acl: private is all there is).",
            )
        if context.key is not None:
            await self.store.stat(context.bucket_name, context.key_name)
        await request.respond(200, _ids(context))

    # --- listings ------------------------------------------------------------------------------------------------

    async def _page(
        self, context: Context, prefix: str, delimiter: str | None, max_keys: int, after: str
    ) -> listing.ListResult:
        """One listing page: the objects after the marker, fed to the builder until the page is full (keys inside a
        common prefix that ended the previous page are skipped by the builder)."""
        builder = listing.ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=max_keys, after=after)
        async with contextlib.aclosing(self.store.objects(context.bucket_name, prefix, after)) as objects:
            async for info in objects:  # closed on the way out: its client goes back to the pool at once
                if not builder.add(info.entry()):
                    break
        return builder.result()

    async def list_objects_v1(self, request: HttpRequest, context: Context) -> None:
        params = request.params  # parsed afresh on each access
        prefix, delimiter, max_keys, encoding = _listing_params(params)
        marker = params.get("marker", "")
        result = await self._page(context, prefix, delimiter, max_keys, marker)
        body = s3xml.render_list_objects_v1(
            context.bucket_name,
            result,
            prefix=prefix,
            delimiter=delimiter,
            marker=marker,
            max_keys=max_keys,
            encoding_type=encoding,
            owner=_owner(context.user),
        )
        await _xml(request, context, body)

    async def list_objects_v2(self, request: HttpRequest, context: Context) -> None:
        params = request.params
        prefix, delimiter, max_keys, encoding = _listing_params(params)
        token, start_after = params.get("continuation-token"), params.get("start-after")
        result = await self._page(context, prefix, delimiter, max_keys, listing.v2_start(token, start_after))
        next_token = (
            listing.continuation_token(result.next_marker) if result.is_truncated and result.next_marker else None
        )
        body = s3xml.render_list_objects_v2(
            context.bucket_name,
            result,
            prefix=prefix,
            delimiter=delimiter,
            max_keys=max_keys,
            encoding_type=encoding,
            continuation_token=token,
            start_after=start_after,
            next_continuation_token=next_token,
            owner=_owner(context.user) if params.get("fetch-owner") == "true" else None,
        )
        await _xml(request, context, body)

    async def list_versions(self, request: HttpRequest, context: Context) -> None:
        params = request.params  # parsed afresh on each access
        prefix, delimiter, max_keys, encoding = _listing_params(params)
        marker = params.get("key-marker", "")
        result = await self._page(context, prefix, delimiter, max_keys, marker)
        body = s3xml.render_list_object_versions(
            context.bucket_name,
            result,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=marker,
            max_keys=max_keys,
            encoding_type=encoding,
            owner=_owner(context.user),
        )
        await _xml(request, context, body)

    # --- objects -------------------------------------------------------------------------------------------------

    async def put_object(self, request: HttpRequest, context: Context) -> None:
        meta = metadata.object_metadata(request.headers)  # refused (MetadataTooLarge) before any byte moves
        content_md5 = request.header("content-md5")
        if content_md5 is not None:  # the ETag is known now: the upload fails unless the bytes match it
            meta[metadata.ETAG_KEY] = f'"{parse_content_md5(content_md5).hex()}"'
        replace = await self._write_allowed(request, context)
        body = _checked_body(request, context)
        try:
            await self.store.put(
                context.bucket_name, context.key_name, body, size=body.size, meta=meta, replace=replace
            )
        except NameExists:
            if replace:
                raise
            raise S3Error("PreconditionFailed", "If-None-Match: * failed: the key exists.") from None
        assert body.md5 is not None
        await request.respond(200, [*_ids(context), ("etag", f'"{body.md5.hex()}"')])

    async def _write_allowed(self, request: HttpRequest, context: Context) -> bool:
        """A conditional PutObject's conditions; returns whether the PUT may replace an existing object.

        ``If-None-Match: *`` (create only, as lock files use it) is the manager's to decide, atomically with the
        write: of two such PUTs one wins, the other is PreconditionFailed. ``If-Match`` and an ETag in If-None-Match
        are checked against the object now, before the body is read; a write landing in between is not seen."""
        if_match, if_none_match = request.header("if-match"), request.header("if-none-match")
        if if_none_match is not None and if_none_match.strip() == "*":
            return False
        if if_match is None and if_none_match is None:
            return True
        try:
            info = await self.store.stat(context.bucket_name, context.key_name)
        except FileNotFound:
            if if_match is not None:
                raise S3Error("PreconditionFailed", "If-Match failed: the key does not exist.") from None
            return True
        if _preconditions(request, info) != 200:
            raise S3Error("PreconditionFailed")
        return True

    async def head_object(self, request: HttpRequest, context: Context) -> None:
        info = await self.store.stat(context.bucket_name, context.key_name)
        status = _preconditions(request, info)
        byte_range = conditional.parse_range(request.header("range"), info.size) if status == 200 else None
        headers = [*_ids(context), *_object_headers(request, info)]
        if byte_range is not None:
            status = 206
            headers += [("content-range", byte_range.content_range), ("content-length", str(byte_range.length))]
        elif status == 200:
            headers.append(("content-length", str(info.size)))
        if status == 412:
            raise S3Error("PreconditionFailed")
        await request.respond(status, headers)

    async def get_object(self, request: HttpRequest, context: Context) -> None:
        if request.header("range") is None and not _has_conditions(request):
            # The common case, in one request to the manager: its answer carries what the headers need.
            async with self.store.download(context.bucket_name, context.key_name) as (info, download):
                headers = [*_ids(context), *_object_headers(request, info), ("content-length", str(info.size))]
                whole = download.inline()  # a small object came inside the answer: sent as it is
                if whole is not None:
                    await request.respond(200, headers, whole)
                else:
                    await request.respond_with(200, headers, download, info.size)
            return
        info = await self.store.stat(context.bucket_name, context.key_name)
        status = _preconditions(request, info)
        if status == 412:
            raise S3Error("PreconditionFailed")
        headers = [*_ids(context), *_object_headers(request, info)]
        if status == 304:
            await request.respond(304, headers)
            return
        byte_range = conditional.parse_range(request.header("range"), info.size)
        offset, length = (byte_range.start, byte_range.length) if byte_range else (0, info.size)
        if byte_range is not None:
            headers.append(("content-range", byte_range.content_range))
        headers.append(("content-length", str(length)))
        async with self.store.get(context.bucket_name, context.key_name, offset, length) as download:
            await request.respond_with(206 if byte_range else 200, headers, download, length)

    async def delete_object(self, request: HttpRequest, context: Context) -> None:
        await self.store.delete(context.bucket_name, context.key_name)
        await request.respond(204, _ids(context))

    async def delete_objects(self, request: HttpRequest, context: Context) -> None:
        wanted = s3xml.delete_objects_request(await _xml_body(request, context))
        deleted, failures = [], []
        for key, version in wanted.objects:
            try:
                check_key(key)
                _check_version_id(version)
                await self.store.delete(context.bucket_name, key)
                deleted.append(key)
            except S3Error as error:
                failures.append(s3xml.DeleteFailure(key, error.code, error.message))
            except DfsError as error:
                mapped = s3_error_of(error)
                failures.append(s3xml.DeleteFailure(key, mapped.code, mapped.message))
        await _xml(request, context, s3xml.render_delete_result(deleted, failures, quiet=wanted.quiet))

    async def copy_object(self, request: HttpRequest, context: Context) -> None:
        info = await self._copy_source_info(request, context)
        replace = (request.header("x-amz-metadata-directive") or "COPY").upper() == "REPLACE"
        if not replace and (info.bucket, info.key) == (context.bucket, context.key):
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself without changing the "
                "object's metadata; use x-amz-metadata-directive: REPLACE.",
            )
        meta = metadata.object_metadata(request.headers) if replace else dict(info.meta)
        meta.pop(metadata.ETAG_KEY, None)  # a copy's ETag is the MD5 of its bytes (the source's may be a multipart one)
        async with self.store.get(info.bucket, info.key) as download:
            copied = Md5Stream(download, info.size)
            await self.store.put(context.bucket_name, context.key_name, copied, size=info.size, meta=meta)
        assert copied.md5 is not None
        await _xml(request, context, s3xml.render_copy_result(f'"{copied.md5.hex()}"', time.time()))

    async def _copy_source_info(self, request: HttpRequest, context: Context) -> ObjectInfo:
        """The object x-amz-copy-source names, once the caller's ownership and the copy's conditions are checked."""
        bucket, key = _copy_source(request.header("x-amz-copy-source") or "")
        await self._check_owner(Context(context.user, None, bucket, key, context.request_id))
        info = await self.store.stat(bucket, key)
        if _preconditions(request, info, prefix="x-amz-copy-source-") != 200:
            raise S3Error("PreconditionFailed")
        return info

    # --- multipart uploads ---------------------------------------------------------------------------------------

    async def create_upload(self, request: HttpRequest, context: Context) -> None:
        meta = metadata.object_metadata(request.headers)  # MetadataTooLarge now, not at completion
        upload_id = await self.store.create_upload(context.bucket_name, context.key_name, context.user, meta)
        await _xml(request, context, s3xml.render_initiate_multipart(context.bucket_name, context.key_name, upload_id))

    async def upload_part(self, request: HttpRequest, context: Context) -> None:
        params = request.params
        number = params.get("partNumber", "")
        if not number.isdigit() or not 1 <= int(number) <= 10_000:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000.")
        upload = await self.store.upload(params["uploadId"], context.bucket_name, context.key_name)
        if not request.header("x-amz-copy-source"):
            md5 = await self.store.put_part(upload, int(number), _checked_body(request, context), context.user)
            await request.respond(200, [*_ids(context), ("etag", f'"{md5.hex()}"')])
            return
        # UploadPartCopy: the part is (a range of) another object.
        info = await self._copy_source_info(request, context)
        byte_range = _copy_range(request.header("x-amz-copy-source-range"), info.size)
        offset, length = (byte_range.start, byte_range.length) if byte_range else (0, info.size)
        async with self.store.get(info.bucket, info.key, offset, length) as download:
            md5 = await self.store.put_part(upload, int(number), Md5Stream(download, length), context.user)
        await _xml(request, context, s3xml.render_copy_result(f'"{md5.hex()}"', time.time(), part=True))

    async def list_parts(self, request: HttpRequest, context: Context) -> None:
        params = request.params
        upload = await self.store.upload(params["uploadId"], context.bucket_name, context.key_name)
        marker_text = params.get("part-number-marker") or "0"
        if not marker_text.isdigit() or int(marker_text) > 10_000:
            raise S3Error("InvalidArgument", "part-number-marker must be a part number, 0 to 10000.")
        marker = int(marker_text)
        max_parts = listing.parse_max_keys(params.get("max-parts"))
        parts = await self.store.parts(upload, after=marker, limit=max_parts + 1)
        page = parts[:max_parts]
        entries = [s3xml.PartEntry(p.number, p.etag, p.size, p.last_modified) for p in page]
        body = s3xml.render_list_parts(
            context.bucket_name,
            context.key_name,
            upload.upload_id,
            entries,
            part_number_marker=marker,
            max_parts=max_parts,
            is_truncated=len(parts) > max_parts,
            owner=_owner(upload.owner),
        )
        await _xml(request, context, body)

    async def list_uploads(self, request: HttpRequest, context: Context) -> None:
        params = request.params
        prefix = params.get("prefix", "")
        max_uploads = listing.parse_max_keys(params.get("max-uploads"))
        key_marker, upload_id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
        uploads = await self.store.uploads(context.bucket_name, prefix, max_uploads + 1, key_marker, upload_id_marker)
        entries = [s3xml.UploadEntry(u.key, u.upload_id, u.initiated, _owner(u.owner)) for u in uploads[:max_uploads]]
        body = s3xml.render_list_multipart_uploads(
            context.bucket_name,
            entries,
            prefix=prefix,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            max_uploads=max_uploads,
            is_truncated=len(uploads) > max_uploads,
        )
        await _xml(request, context, body)

    async def abort_upload(self, request: HttpRequest, context: Context) -> None:
        upload = await self.store.upload(request.params["uploadId"], context.bucket_name, context.key_name)
        await self.store.abort_upload(upload, context.user)
        await request.respond(204, _ids(context))

    async def complete_upload(self, request: HttpRequest, context: Context) -> None:
        upload = await self.store.upload(request.params["uploadId"], context.bucket_name, context.key_name)
        parts = s3xml.complete_multipart_parts(await _xml_body(request, context))
        etag = await self.store.complete_upload(upload, [(part.part_number, part.etag) for part in parts], context.user)
        location = f"/{quote(context.bucket_name)}/{quote(context.key_name)}"
        body = s3xml.render_complete_multipart(location, context.bucket_name, context.key_name, etag)
        await _xml(request, context, body)


# The operations on a bucket and on an object, by method and S3 sub-resource (None: the plain operation). ListObjects
# V1 stands for V2 too (``list-type=2``), PutObject for CopyObject (``x-amz-copy-source``).
BUCKET_ROUTES: dict[tuple[str, str | None], Handler] = {
    ("GET", None): S3Api.list_objects_v1,
    ("GET", "location"): S3Api.get_location,
    ("GET", "versioning"): S3Api.get_versioning,
    ("GET", "versions"): S3Api.list_versions,
    ("GET", "uploads"): S3Api.list_uploads,
    ("GET", "acl"): S3Api.get_acl,
    ("PUT", "acl"): S3Api.put_acl,
    ("PUT", None): S3Api.create_bucket,
    ("HEAD", None): S3Api.head_bucket,
    ("DELETE", None): S3Api.delete_bucket,
    ("POST", "delete"): S3Api.delete_objects,
}
OBJECT_ROUTES: dict[tuple[str, str | None], Handler] = {
    ("PUT", None): S3Api.put_object,
    ("GET", None): S3Api.get_object,
    ("HEAD", None): S3Api.head_object,
    ("DELETE", None): S3Api.delete_object,
    ("GET", "acl"): S3Api.get_acl,
    ("PUT", "acl"): S3Api.put_acl,
    ("POST", "uploads"): S3Api.create_upload,
    ("PUT", "uploadId"): S3Api.upload_part,
    ("GET", "uploadId"): S3Api.list_parts,
    ("DELETE", "uploadId"): S3Api.abort_upload,
    ("POST", "uploadId"): S3Api.complete_upload,
}

# The query parameters that name an S3 sub-resource, a different operation from the plain one on the same path (the
# S3 API reference); any other parameter (prefix, max-keys, partNumber, x-id ...) only qualifies an operation.
S3_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment",
        "restore", "retention", "select", "session", "tagging", "torrent", "uploadId", "uploads", "versioning",
        "versions", "website",
    }
)  # fmt: skip


def _subresource(params: Mapping[str, str]) -> str | None:
    """The S3 sub-resource a request's query names, if any (``uploadId`` before the others: a part's requests)."""
    if "uploadId" in params:
        return "uploadId"
    return next((name for name in params if name in S3_SUBRESOURCES), None)


# --- helpers ----------------------------------------------------------------------------------------------------------


def _resource(request: HttpRequest, context: Context | None) -> str:
    """What an error body names as its Resource: the bucket and key, or the path as sent if they were not known."""
    if context is None:
        return unquote(request.raw_path)
    return "/" + "/".join(part for part in (context.bucket, context.key) if part)


def _is_signed(request: HttpRequest) -> bool:
    query = request.query
    return request.header("authorization") is not None or "X-Amz-Signature=" in query or "Signature=" in query


def _name(bucket: Bucket) -> str:
    return bucket.name


def _owner(user: str) -> s3xml.Owner:
    return s3xml.Owner(user, user)


def _ids(context: Context) -> list[tuple[str, str]]:
    return [("x-amz-request-id", context.request_id), ("server", "dfsd")]


async def _xml(request: HttpRequest, context: Context, body: bytes) -> None:
    await request.respond(200, [*_ids(context), ("content-type", "application/xml")], body)


async def _xml_body(request: HttpRequest, context: Context) -> s3xml.XmlNode:
    """The XML of a DeleteObjects or CompleteMultipartUpload, checked against what its request declares of it (a
    SIGNED payload's SHA-256, Content-MD5, an x-amz-checksum-* header, which SDKs send instead of Content-MD5) before
    anything is done: a signature covers the body only through that hash, so an unchecked body could be swapped under a
    valid signature."""
    parser = s3xml.XmlBody()
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    checksum = declared_checksum(request)
    verifier, expected = (ChecksumVerifier(checksum[0]), checksum[1]) if checksum is not None else (None, "")
    async for chunk in request.body():
        parser.feed(chunk)
        sha256.update(chunk)
        md5.update(chunk)
        if verifier is not None:
            verifier.update(chunk)
    declared = context.auth.content_sha256 if context.auth is not None else None
    if declared is not None and not hmac.compare_digest(sha256.hexdigest(), declared):
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The body does not hash to the SHA-256 that x-amz-content-sha256 declared; nothing was done.",
        )
    content_md5 = request.header("content-md5")
    if content_md5 is not None:
        check_content_md5(parse_content_md5(content_md5), md5.digest())
    if verifier is not None:
        verifier.verify(expected)
    return parser.close()


def _checked_body(request: HttpRequest, context: Context) -> CheckedBody:
    """The body of a PutObject or UploadPart, checked as it streams. One that says neither its length nor that it
    comes chunked is MissingContentLength (411), as S3 answers, rather than stored as an empty object."""
    if request.header("content-length") is None and request.header("transfer-encoding") is None:
        raise S3Error("MissingContentLength")
    content_md5 = request.header("content-md5")
    return CheckedBody(request, context.auth, parse_content_md5(content_md5) if content_md5 is not None else None)


CONDITIONAL_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def _has_conditions(request: HttpRequest) -> bool:
    return any(request.header(name) is not None for name in CONDITIONAL_HEADERS)


def _preconditions(request: HttpRequest, info: ObjectInfo, prefix: str = "") -> int:
    conditions = conditional.Conditions(
        if_match=request.header(prefix + "if-match"),
        if_none_match=request.header(prefix + "if-none-match"),
        if_modified_since=request.header(prefix + "if-modified-since"),
        if_unmodified_since=request.header(prefix + "if-unmodified-since"),
    )
    return conditional.evaluate(conditions, info.etag, info.last_modified, method=request.method).value


def _object_headers(request: HttpRequest, info: ObjectInfo) -> list[tuple[str, str]]:
    """An object's headers in GET and HEAD answers, with the response-* overrides of a signed request applied."""
    headers = {
        "etag": info.etag,
        "last-modified": conditional.http_date(info.last_modified),
        "accept-ranges": "bytes",
        **dict(metadata.response_headers(info.meta)),
    }
    if request.query:
        params = request.params
        for parameter, header in RESPONSE_OVERRIDES.items():
            if parameter in params:
                headers[header] = params[parameter]
    return list(headers.items())


def _check_version_id(version: str | None) -> None:
    """dfsd buckets are unversioned: an object's one version is ``null`` (as ListObjectVersions says). Naming any
    other is InvalidArgument, as S3 answers for an unversioned bucket, rather than acting on the current object
    (a DeleteObject of some other version deleted it)."""
    if version is not None and version != "null":
        raise S3Error("InvalidArgument", f"Invalid version id {version!r}: objects in dfsd have only the version null.")


def _copy_range(header: str | None, size: int) -> conditional.ByteRange | None:
    """x-amz-copy-source-range (``bytes=FIRST-LAST``, both required): InvalidArgument if it is not of that form,
    InvalidRange if it reaches past the source object, as S3 answers."""
    if header is None:
        return None
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise S3Error("InvalidArgument", f"x-amz-copy-source-range {header!r} is not bytes=FIRST-LAST.")
    if int(last) >= size:
        raise S3Error("InvalidRange", f"x-amz-copy-source-range {header!r} reaches past the source's {size} bytes.")
    return conditional.ByteRange(int(first), int(last) - int(first) + 1, size)


def _copy_source(header: str) -> tuple[str, str]:
    """(bucket, key) of x-amz-copy-source (``bucket/key`` or ``/bucket/key``, URL-encoded, maybe ?versionId=)."""
    path, _, query = header.partition("?")
    path = path.lstrip("/")
    _check_version_id(dict(parse_qsl(query)).get("versionId"))
    bucket, _, key = unquote(path).partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be BUCKET/KEY.")
    return check_bucket_name(bucket), check_key(key)


def _listing_params(params: Mapping[str, str]) -> tuple[str, str | None, int, str | None]:
    """What every listing takes alike: ``prefix``, ``delimiter`` (None: none), ``max-keys`` and ``encoding-type``."""
    return (
        params.get("prefix", ""),
        params.get("delimiter") or None,
        listing.parse_max_keys(params.get("max-keys")),
        listing.check_encoding_type(params.get("encoding-type")),
    )

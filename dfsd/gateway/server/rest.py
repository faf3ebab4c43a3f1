"""The original project's REST API, on the gateway's port: ``POST /file``, ``GET /file/NAME``, ``DELETE /file/NAME``.

Names: a REST file name is the dfsd name itself, so ``GET /file/photos/cat.jpg`` reads the S3 object ``cat.jpg`` of
bucket ``photos``, and a name with no ``/`` (as the original's were) is a bucket-less dfsd file, which S3 never lists.
Authentication is HTTP Basic with an S3 access key as the user name and its secret key as the password.

Uploads stream: a raw body with ``?filename=``, a multipart/form-data ``file`` field (a file, or base64 text as the
original took it, after a ``filename`` field), or an urlencoded form (``filename`` and base64 ``file``, which
arrives whole and so is capped at ``MAX_FORM_BYTES``). The answer is JSON ``{"filename", "id"}``, the id being the
hex SHA-256 of the bytes (dfsd stores by content checksum, and the same bytes give the same id). Errors are JSON
``{"code", "message"}`` with dfsd's error code and the HTTP status of ``HTTP_STATUS``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from urllib.parse import parse_qs, unquote

from dfsd.client import BadRequest, DfsError, ErrorCode, Stored

from .. import conditional
from ..errors import S3Error
from ..formdata import Event as FormEvent
from ..formdata import FormError, FormParser, PartData, PartEnded, PartStarted, boundary_of
from .credentials import Credentials
from .http import ClientGone, HttpRequest
from .store import ClientPool

PREFIX = "/file"

# The HTTP status each dfsd error code is answered with: the original's for 1-4, then ours.
HTTP_STATUS = {
    ErrorCode.SERVERS_UNAVAILABLE: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NAME_EXISTS: 409,
    ErrorCode.FILE_UNAVAILABLE: 503,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PROTOCOL_ERROR: 400,
    ErrorCode.CHECKSUM_MISMATCH: 400,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.NOT_AUTHORISED: 500,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NODE_ID_IN_USE: 500,
    ErrorCode.BUCKET_OWNED_BY_YOU: 409,
    ErrorCode.BUCKET_EXISTS: 409,
    ErrorCode.BUCKET_NOT_EMPTY: 409,
    ErrorCode.NO_SUCH_BUCKET: 404,
    ErrorCode.BUCKET_NOT_YOURS: 403,
    ErrorCode.NO_SUCH_UPLOAD: 404,
    ErrorCode.INVALID_PART: 400,
}

# An urlencoded form carries the file as base64 text in one field, so it must be read whole: 64 MiB of it at most.
MAX_FORM_BYTES = 64 * 1024 * 1024

# The filename field of a multipart form.
MAX_FILENAME_FIELD = 4096


class Unauthorised(Exception):
    """No valid HTTP Basic credentials."""


def is_rest(raw_path: str) -> bool:
    return raw_path == PREFIX or raw_path.startswith(PREFIX + "/")


class RestApi:
    def __init__(self, pool: ClientPool, credentials: Credentials, *, anonymous: bool) -> None:
        self.pool = pool
        self.credentials = credentials
        self.anonymous = anonymous

    async def handle(self, request: HttpRequest) -> None:
        try:
            self._authenticate(request)
            name = unquote(request.raw_path[len(PREFIX) + 1 :], errors="strict")
            request.operation = f"rest.{request.method.lower()}"
            if request.method == "POST" and not name:
                await self._post(request)
            elif request.method in ("GET", "HEAD") and name:
                await self._get(request, name)
            elif request.method == "DELETE" and name:
                async with self.pool.client() as client:
                    await client.delete(name)
                await _json(request, 200, {"filename": name})
            else:
                raise BadRequest("bad request: use POST /file, GET /file/NAME or DELETE /file/NAME")
        except Unauthorised as err:
            headers = [("www-authenticate", 'Basic realm="dfsd"')]
            await _json(request, 401, {"code": int(ErrorCode.NOT_AUTHORISED), "message": str(err)}, headers)
        except DfsError as err:
            if request.response_started:
                raise
            await _json(request, HTTP_STATUS.get(err.code, 500), {"code": int(err.code), "message": err.message})
        except (FormError, UnicodeDecodeError, binascii.Error, ValueError) as err:
            await _json(request, 400, {"code": int(ErrorCode.BAD_REQUEST), "message": f"bad request: {err}"})
        except S3Error as err:  # a Range that cannot be satisfied
            await _json(request, err.status, {"code": int(ErrorCode.BAD_REQUEST), "message": err.message})

    def _authenticate(self, request: HttpRequest) -> None:
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            if self.anonymous:
                return
            raise Unauthorised("not authorised: send HTTP Basic credentials (access key : secret key)")
        try:
            access, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorised("not authorised: the Basic credentials are not base64 of KEY:SECRET") from None
        expected = self.credentials.secret(access)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            raise Unauthorised("not authorised: unknown access key or wrong secret key")

    async def _post(self, request: HttpRequest) -> None:
        content_type = (request.header("content-type") or "").lower()
        filename = request.params.get("filename")
        if content_type.startswith("multipart/form-data"):
            stored, filename = await self._post_form(request, boundary_of(request.header("content-type") or ""))
        elif content_type.startswith("application/x-www-form-urlencoded") and filename is None:
            form = parse_qs((await request.read_small(MAX_FORM_BYTES)).decode("ascii"), strict_parsing=True)
            filename, data = form.get("filename", [""])[0], form.get("file", [""])[0]
            if not filename:
                raise BadRequest("bad request: the form has no filename field")
            stored = await self._put(filename, base64.b64decode(data, validate=True), None)
        elif filename:
            stored = await self._put(filename, _raw(request), request.content_length)
        else:
            raise BadRequest("bad request: name the file with ?filename=NAME, or send a form with filename and file")
        await _json(request, 200, {"filename": filename, "id": stored.sha256.hex()})

    async def _post_form(self, request: HttpRequest, boundary: str) -> tuple[Stored, str]:
        events = _form_events(request, FormParser(boundary))
        filename = ""
        async with contextlib.aclosing(events):
            async for event in events:
                if not isinstance(event, PartStarted):
                    continue
                if event.name == "filename":
                    filename = (await _field(events)).decode("utf-8")
                elif event.name == "file":
                    is_file = event.filename is not None
                    name = filename or event.filename or ""
                    if not name:
                        raise BadRequest("bad request: send the filename field before the file field")
                    data = _part_data(events) if is_file else _base64_decoded(_part_data(events))
                    stored = await self._put(name, data, None)
                    async for _ in events:  # the rest of the form, to its final boundary
                        pass
                    return stored, name
        raise BadRequest("bad request: the form has no file field")

    async def _put(self, name: str, source: bytes | AsyncIterator[bytes], size: int | None) -> Stored:
        async with self.pool.client() as client:
            return await client.put(name, source, size=size)

    async def _get(self, request: HttpRequest, name: str) -> None:
        async with self.pool.client() as client:
            info = await client.stat(name)
            if request.params.get("base64") in ("1", "true"):
                await request.respond(200, [("content-type", "application/json")], more=True)
                prefix = json.dumps({"filename": name, "file": ""})[:-2].encode()
                await request.send({"type": "http.response.body", "body": prefix, "more_body": True})
                await request.stream(_base64_encoded(await client.get(name)), end=False)
                await request.send({"type": "http.response.body", "body": b'"}', "more_body": False})
                return
            byte_range = conditional.parse_range(request.header("range"), info.size)
            offset, length = (byte_range.start, byte_range.length) if byte_range else (0, info.size)
            headers = [
                ("content-type", "application/octet-stream"),
                ("content-length", str(length)),
                ("accept-ranges", "bytes"),
            ]
            if byte_range is not None:
                headers.append(("content-range", byte_range.content_range))
            if request.method == "HEAD":
                await request.respond(206 if byte_range else 200, headers)
                return
            download = await client.get(name, offset=offset, length=length)
            await request.respond_with(206 if byte_range else 200, headers, download, length)


async def _json(
    request: HttpRequest, status: int, body: dict[str, object], headers: list[tuple[str, str]] | None = None
) -> None:
    extra = [("connection", "close")] if request.body_unread else []
    headers = [("content-type", "application/json"), *(headers or []), *extra]
    await request.respond(status, headers, json.dumps(body).encode())


async def _raw(request: HttpRequest) -> AsyncIterator[bytes]:
    expected, received = request.content_length, 0
    try:
        async for chunk in request.body():
            received += len(chunk)
            yield chunk
    except ClientGone:
        raise BadRequest("bad request: the client went away before the body ended; nothing was kept") from None
    if expected is not None and received != expected:
        raise BadRequest(f"bad request: the body held {received} bytes, Content-Length said {expected}")


async def _form_events(request: HttpRequest, parser: FormParser) -> AsyncGenerator[FormEvent]:
    async for chunk in _raw(request):
        for event in parser.feed(chunk):
            yield event
    parser.close()


async def _part_data(events: AsyncIterator[FormEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, PartEnded):
            return
        if isinstance(event, PartData):
            yield event.data
    raise FormError("the form ended inside a part")


async def _field(events: AsyncIterator[FormEvent]) -> bytes:
    value = bytearray()
    async for chunk in _part_data(events):
        value += chunk
        if len(value) > MAX_FILENAME_FIELD:
            raise FormError(f"the filename field is over {MAX_FILENAME_FIELD} bytes")
    return bytes(value)


async def _base64_decoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 text decoded as it streams (white space ignored), whole 4-character groups at a time."""
    pending = b""
    async for chunk in chunks:
        pending += b"".join(chunk.split())
        whole = len(pending) - len(pending) % 4
        if whole:
            yield base64.b64decode(pending[:whole], validate=True)
            pending = pending[whole:]
    if pending:
        raise FormError("the base64 file field is cut short")


async def _base64_encoded(chunks: AsyncIterable[memoryview]) -> AsyncIterator[bytes]:
    pending = b""
    async for chunk in chunks:
        pending += bytes(chunk)
        whole = len(pending) - len(pending) % 3
        if whole:
            yield base64.b64encode(pending[:whole])
            pending = pending[whole:]
    if pending:
        yield base64.b64encode(pending)

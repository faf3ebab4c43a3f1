"""Multipart uploads: their records, their parts, and their completion into one normal file.

Theory of operation. An upload is a record in the metadata store (``multipart_uploads``: id, the file it becomes,
owner, metadata) and each part a record too (``multipart_parts``: number, MD5, size, and the stored file holding its
bytes). A part's bytes are an ordinary file under the upload's hidden prefix (``part_prefix``): the client stores it
with a ``put`` (the manager takes one there only while the upload takes parts), then records it with ``put_part``,
which replaces the part of that number and deletes the file it had. Nothing of this lives in a manager's memory, so
every manager sharing the database serves every upload, and a restart forgets nothing.

Completing claims the upload first (``claim_upload``, one statement), so that no part is recorded, nor the upload
aborted, while its parts are joined; then the parts are looked up and checked against the MD5s asked for, one node
builds the file (``FileOperations.compose``), the upload's records go, and so do all the files under its prefix. A
failure gives the claim back; a manager that dies completing leaves it to run out (``COMPLETION_LEASE``). Aborting
and expiring remove the records first and the files after: a part committed in between finds its upload gone and
removes itself (``FileOperations.handle_put``), and ``expire_uploads`` sweeps what a crash left under the prefix.

The manager takes owners as given, as for buckets (``buckets.py``): a gateway authenticates its users; the manager
checks that the one named is the upload's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from ..protocol import (
    MAX_LIST_PAGE,
    MAX_UPLOAD_PARTS,
    PARTS_PREFIX,
    BadRequest,
    BucketNotYours,
    FileNotFound,
    InvalidPart,
    NoSuchUpload,
    check_meta,
    check_name,
    check_owner,
    check_part_number,
    is_part_name,
    part_prefix,
    upload_of_part,
)
from ..protocol.messages import (
    AbortUpload,
    ChosenPart,
    CompleteUpload,
    CreateUpload,
    ExpireUploads,
    ListParts,
    ListUploads,
    Ok,
    Parts,
    PutPart,
    StatUpload,
    Upload,
    UploadInfo,
    UploadPart,
    Uploads,
)
from ..service import Request
from ..settings import Limits
from ..wire import Connection
from .files import FileOperations
from .store import COMPLETION_LEASE, FileRecord, MetadataStore, PartRecord, UploadRecord

MD5_BYTES = 16


class MultipartOperations:
    def __init__(self, store: MetadataStore, files: FileOperations, limits: Limits) -> None:
        self.store = store
        self.files = files  # joins the parts (``compose``) and removes files with their bytes
        self.limits = limits

    async def handle_create_upload(self, conn: Connection, request: CreateUpload, req: Request) -> None:
        check_name(request.name, self.limits.max_name_bytes)
        if is_part_name(request.name):
            raise BadRequest(f"bad request: names under {PARTS_PREFIX!r} hold the parts of multipart uploads")
        check_owner(request.owner)
        check_meta(request.meta)
        upload = UploadRecord(secrets.token_hex(16), request.name, request.owner, time.time(), request.meta, None)
        req.fields.update(name=request.name, upload=upload.upload_id)
        await self.store.create_upload(upload)
        await conn.send(Upload(_info(upload)))

    async def handle_stat_upload(self, conn: Connection, request: StatUpload, req: Request) -> None:
        req.fields.update(upload=request.upload_id)
        await conn.send(Upload(_info(await self._find(request.upload_id))))

    async def handle_put_part(self, conn: Connection, request: PutPart, req: Request) -> None:
        req.fields.update(upload=request.upload_id, part=request.number)
        check_part_number(request.number)
        if len(request.md5) != MD5_BYTES:
            raise BadRequest(f"bad request: an MD5 is {MD5_BYTES} bytes, this one {len(request.md5)}")
        if not request.name.startswith(part_prefix(request.upload_id)):
            raise BadRequest(
                f"bad request: the parts of upload {request.upload_id!r} are files named "
                f"{part_prefix(request.upload_id) + '...'!r}, not {request.name!r}"
            )
        file = await self.store.find(request.name)
        if file is None:
            raise FileNotFound(f"file does not exist: {request.name!r}; store the part's bytes first")
        part = PartRecord(request.upload_id, request.number, file.name, file.id, file.size, request.md5, time.time())
        try:
            await self._find(request.upload_id, request.owner)
            recorded, replaced = await self.store.record_part(part, time.time() - COMPLETION_LEASE)
            if not recorded:
                raise _no_such_upload(request.upload_id)
        except (NoSuchUpload, BucketNotYours):  # nobody may record these bytes now: they go at once
            await self.files.remove_files([(file.name, file.id)])
            raise
        if replaced is not None and replaced.file_id != file.id:  # a part sent again: the last one wins
            await self.files.remove_files([(replaced.name, replaced.file_id)])
        await conn.send(Ok())

    async def handle_list_parts(self, conn: Connection, request: ListParts, req: Request) -> None:
        req.fields.update(upload=request.upload_id)
        await self._find(request.upload_id)
        limit = min(request.limit or MAX_LIST_PAGE, MAX_LIST_PAGE)
        parts = await self.store.list_parts(request.upload_id, request.after, limit + 1)
        await conn.send(Parts([_part_info(part) for part in parts[:limit]], more=len(parts) > limit))

    async def handle_list_uploads(self, conn: Connection, request: ListUploads, req: Request) -> None:
        limit = min(request.limit or MAX_LIST_PAGE, MAX_LIST_PAGE)
        after = None if request.after is None else (request.after, request.after_upload or "")
        uploads = await self.store.list_uploads(request.prefix, after, limit + 1)
        req.fields.update(prefix=request.prefix, count=len(uploads[:limit]))
        await conn.send(Uploads([_info(upload) for upload in uploads[:limit]], more=len(uploads) > limit))

    async def handle_complete_upload(self, conn: Connection, request: CompleteUpload, req: Request) -> None:
        req.fields.update(upload=request.upload_id, parts=len(request.parts))
        if not 0 < len(request.parts) <= MAX_UPLOAD_PARTS:
            raise BadRequest(f"bad request: an upload completes with 1 to {MAX_UPLOAD_PARTS} parts")
        numbers = [part.number for part in request.parts]
        if numbers != sorted(set(numbers)):
            raise BadRequest("bad request: a completion names its parts in ascending order of number, each once")
        check_meta(request.meta)
        upload = await self._find(request.upload_id, request.owner)
        now = time.time()
        if not await self.store.claim_upload(upload.upload_id, now, now - COMPLETION_LEASE):
            raise _no_such_upload(upload.upload_id)
        try:
            records = await self._chosen_files(upload.upload_id, request.parts)
            meta = upload.meta if request.meta is None else request.meta
            stored = await self.files.compose(upload.name, records, True, meta, req)
        except BaseException:
            await self.store.unclaim_upload(upload.upload_id)
            raise
        await self.store.forget_upload(upload.upload_id, None)
        await self._remove_part_files(upload.upload_id)
        await conn.send(stored)

    async def _chosen_files(self, upload_id: str, chosen: Sequence[ChosenPart]) -> list[FileRecord]:
        """The files of the parts ``chosen``, each recorded with the MD5 asked for (else InvalidPart)."""
        recorded: dict[int, PartRecord] = {}
        after = 0
        while page := await self.store.list_parts(upload_id, after, MAX_LIST_PAGE):
            recorded.update((part.number, part) for part in page)
            after = page[-1].number
        files = []
        for want in chosen:
            part = recorded.get(want.number)
            if part is None or part.md5 != want.md5:
                raise InvalidPart(
                    f"invalid part: part {want.number} of upload {upload_id!r} was not uploaded, or not with the MD5 "
                    f"{want.md5.hex()}; list the parts and complete with those"
                )
            file = await self.store.find(part.name)
            if file is None or file.id != part.file_id:
                raise InvalidPart(f"invalid part: the bytes of part {want.number} of upload {upload_id!r} are gone")
            files.append(file)
        return files

    async def handle_abort_upload(self, conn: Connection, request: AbortUpload, req: Request) -> None:
        req.fields.update(upload=request.upload_id)
        await self._find(request.upload_id, request.owner)
        if not await self.store.forget_upload(request.upload_id, time.time() - COMPLETION_LEASE):
            raise _no_such_upload(request.upload_id)
        await self._remove_part_files(request.upload_id)
        await conn.send(Ok())

    async def handle_expire_uploads(self, conn: Connection, request: ExpireUploads, req: Request) -> None:
        now = time.time()
        old = await self.store.uploads_begun_before(now - request.age, MAX_LIST_PAGE)
        expired = []
        for upload in old:
            if await self.store.forget_upload(upload.upload_id, now - COMPLETION_LEASE):
                await self._remove_part_files(upload.upload_id)
                expired.append(upload)
        swept = await self._sweep_leftovers()
        req.fields.update(expired=len(expired), swept=swept)
        await conn.send(Uploads([_info(upload) for upload in expired], more=len(old) == MAX_LIST_PAGE))

    async def _sweep_leftovers(self) -> int:
        """Remove the part files of uploads that no longer exist (an abort or an expiry cut short by a crash);
        return how many."""
        leftovers: list[FileRecord] = []
        known: dict[str, bool] = {}
        after: str | None = None
        while page := await self.store.list_files(PARTS_PREFIX, after, MAX_LIST_PAGE, parts=True):
            for file in page:
                upload_id = upload_of_part(file.name)
                if upload_id not in known:
                    known[upload_id] = await self.store.find_upload(upload_id) is not None
                if not known[upload_id]:
                    leftovers.append(file)
            after = page[-1].name
        await self.files.remove_files((file.name, file.id) for file in leftovers)
        return len(leftovers)

    async def _remove_part_files(self, upload_id: str) -> None:
        """Remove every file under the upload's prefix: its parts, those replaced, and any never recorded."""
        while page := await self.store.list_files(part_prefix(upload_id), None, MAX_LIST_PAGE, parts=True):
            await self.files.remove_files((file.name, file.id) for file in page)
            if len(page) < MAX_LIST_PAGE:
                return

    async def _find(self, upload_id: str, owner: str | None = None) -> UploadRecord:
        upload = await self.store.find_upload(upload_id)
        if upload is None:
            raise _no_such_upload(upload_id)
        if owner is not None and owner != upload.owner:
            raise BucketNotYours(
                f"the multipart upload {upload_id!r} belongs to another owner (who owned its bucket when it began)"
            )
        return upload


def _no_such_upload(upload_id: str) -> NoSuchUpload:
    return NoSuchUpload(
        f"no such multipart upload: {upload_id!r} was never created, or it was completed, aborted or expired, or is "
        "being completed now; create a new one"
    )


def _info(upload: UploadRecord) -> UploadInfo:
    return UploadInfo(upload.upload_id, upload.name, upload.owner, upload.initiated, upload.meta)


def _part_info(part: PartRecord) -> UploadPart:
    return UploadPart(part.number, part.size, part.md5, part.created)

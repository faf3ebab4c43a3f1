"""The Python client: everything a program (or the bundled tools) can ask of a dfsd cluster.

``Client`` is async and keeps one connection to the manager, opened on first use and reopened after a failure left it
in an unknown state. Uploads stream from a path, a binary file object, bytes or an async iterable of byte chunks, and
carry the SHA-256 of what was sent in their closing frame, so the node refuses bytes damaged on the way. Downloads come
as an async iterator of chunks whose checksum is verified against the manager's record when the last chunk has
arrived (for whole-file reads; a range cannot be checked against the whole file's hash).

Every failure is a ``DfsError`` subclass with its wire code; an unreachable manager is ``ServersUnavailable`` (error 1),
and a connection to it that broke in the middle of a request is ``ManagerLost`` (error 1 too: the outcome is unknown).
An upload whose connection broke is asked once more by ``put`` itself when its SHA-256 is known by then (a put naming
its size and SHA-256 is always safe to repeat: the manager answers it ``stored`` if the first attempt was stored).

Several managers (``"A,B,C"``, all in front of one database) are one cluster to the client: it talks to one at a time,
the last that answered, and when that one cannot be reached it tries the next in the list. A request the lost manager
was serving is asked again of the next one when repeating it is safe: the reads (stat, list, status, and a download,
which resumes after the bytes already returned, once the new manager's record shows the same file), and an upload as
above. ``on_retry`` hears one line for each such retry; other requests (delete, drain, ...) fail with ``ManagerLost``.
``dfsd.sync_client.SyncClient`` is the same API for scripts without an event loop.

This module is the client library's public surface: ``__all__`` names everything a program needs — the client, the
error classes (one per wire code), the records the calls return, and ``run`` for the event loop dfsd uses — so
programs, the bundled tools included, import nothing else of dfsd.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import hashlib
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from .aio import run
from .bulk import ThreadedWriter, finish, in_thread
from .directio import DirectFile
from .protocol import (
    CHUNK_SIZE,
    MAX_META_BYTES,
    BadRequest,
    BucketExists,
    BucketNotEmpty,
    BucketNotYours,
    BucketOwnedByYou,
    ChecksumMismatch,
    DfsError,
    ErrorCode,
    FileNotFound,
    FileUnavailable,
    InternalError,
    InvalidPart,
    NameExists,
    NodeIdInUse,
    NoSuchBucket,
    NoSuchUpload,
    NotAuthorised,
    ProtocolError,
    ServersUnavailable,
    StorageFull,
    check_meta,
    check_name,
    check_part_number,
    part_prefix,
)
from .protocol.messages import (
    AbortUpload,
    Bucket,
    BucketInfo,
    Buckets,
    Buffer,
    ChosenPart,
    ClusterStatus,
    CompleteUpload,
    Compose,
    CreateBucket,
    CreateUpload,
    Data,
    Delete,
    DeleteBucket,
    Drain,
    End,
    ExpireUploads,
    FileInfo,
    Get,
    Info,
    List,
    ListBuckets,
    Listing,
    ListParts,
    ListUploads,
    Message,
    NodeInfo,
    Ok,
    Parts,
    Put,
    PutPart,
    Rebalance,
    RebalanceInfo,
    Scrub,
    ScrubReport,
    Sending,
    Stat,
    StatBucket,
    StatUpload,
    Status,
    Stored,
    Upload,
    UploadInfo,
    UploadPart,
    Uploads,
)
from .settings import SECRET_ENV, SECRET_FILE_ENV, TLS_CA_ENV, Security
from .transfer import receive_file, send_file, send_upload
from .wire import Connection, ConnectionLost, conversation_of

# The client, its settings, the error classes (one per wire code) and the records the calls return.
__all__ = [
    "CHUNK_SIZE", "DEFAULT_MANAGER", "MAX_META_BYTES", "SECRET_ENV", "SECRET_FILE_ENV", "TLS_CA_ENV", "BadRequest",
    "BucketExists", "BucketInfo", "BucketNotEmpty", "BucketNotYours", "BucketOwnedByYou", "ChecksumMismatch", "Client",
    "ClusterStatus", "DfsError", "Download", "ErrorCode", "FileInfo", "FileNotFound", "FileUnavailable",
    "InternalError", "InvalidPart", "ManagerLost", "NameExists", "NoSuchBucket", "NoSuchUpload", "NodeIdInUse",
    "NodeInfo", "NotAuthorised", "ProtocolError", "RebalanceInfo", "ScrubReport", "Security", "Sending",
    "ServersUnavailable", "Source", "StorageFull", "Stored", "UploadInfo", "UploadPart", "file_size",
    "format_address", "manager_addresses", "run",
]  # fmt: skip

DEFAULT_MANAGER = "127.0.0.1:8000"

# Chunks of a regular file read per trip to a thread while uploading it: 4 MiB, as ``bulk.BATCH_BYTES`` for the same
# reason (a trip's wake-ups cost more than reading one chunk); measured, dfs-push then took 0.1 s less CPU per GiB and
# a third of the context switches. (Measured and not kept: a thread sending a regular file's data frames itself, each
# chunk read into one reused buffer to hash it and its bytes sent by the kernel with os.sendfile: dfs-push spent
# 1.05-1.23 s of CPU per GiB with it against 1.12-1.19 s without, within the noise, for a second way to send.)
READ_BATCH = 4

# How long a retried upload waits for its name to be freed by the attempt a lost manager left in flight (its lease,
# 5 s, and the coordinator's round to notice, with room to spare), and how often it asks.
HELD_NAME_WAIT = 30.0
HELD_NAME_POLL = 0.5

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Source = str | os.PathLike[str] | BinaryIO | bytes | AsyncIterable[bytes]


class ManagerLost(ServersUnavailable):
    """The connection to the manager broke in the middle of a request: its outcome is unknown (error 1)."""


def manager_addresses(addresses: str | None = None) -> list[tuple[str, int]]:
    """The managers, ``HOST:PORT[,HOST:PORT...]``, from the argument, else ``$DFS_MANAGER``, else 127.0.0.1:8000."""
    text = addresses or os.environ.get("DFS_MANAGER") or DEFAULT_MANAGER
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise ValueError(f"manager list {text!r} has an empty entry: give HOST:PORT, or HOST:PORT,HOST:PORT,...")
    return [_manager_address(part) for part in parts]


def _manager_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"manager address {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Download:
    """The bytes of one download, as an async iterator of chunks; ``info`` says what is coming.

    A small file's bytes came inside ``info``; a larger one's follow as a stream on ``conn``, which the download owns
    until its last chunk has been read (the connection's conversation holds it to exactly ``info.length`` bytes)."""

    def __init__(self, client: Client, conn: Connection, info: Sending, name: str) -> None:
        self.info = info
        self._client = client
        self._conn = conn
        self._name = name
        self._body = receive_file(conn, info)

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        hasher = self._hasher()
        async for chunk in self._received():
            if hasher is not None:
                hasher.update(chunk)
            yield chunk
        self._verify(hasher)

    def inline(self) -> bytes | None:
        """The whole of the bytes, verified, if they came inside ``info`` (a small file); None if they follow as a
        stream (iterate then). For a server answering many small reads: no iteration, no copy."""
        body = self._body
        if body.frames is not None:
            return None
        data = body.data or b""
        hasher = self._hasher()
        if hasher is not None:
            hasher.update(data)
        self._verify(hasher)
        return data

    async def save(self, file: BinaryIO, progress: Callable[[int], object] | None = None) -> Sending:
        """Write the bytes into ``file`` (a binary file whose ``write`` takes all it is given, as buffered files do)
        and verify them; returns what was sent. ``progress`` hears the length of each chunk as it arrives.

        The writing happens in a thread, a few MiB at a time (``bulk.ThreadedWriter``), and the hashing in another,
        while the loop goes on receiving: on the loop, writing a large file took half of ``dfs-cat -o``'s time.
        However this ends, no thread writes to ``file`` any more once it has; a failure of ``file`` is its
        ``OSError``."""
        file.flush()
        await self._write(file.write, progress)
        file.flush()
        return self.info

    async def save_to_fd(self, fd: int, progress: Callable[[int], object] | None = None) -> Sending:
        """Write the bytes into the regular file open for writing on ``fd``, from its offset, and verify them; returns
        what was sent. As ``save``, but around the page cache where the file system allows (``directio``): the
        kernel's copy into its cache cost more CPU than all the rest of the writing. ``fd`` is left as it was given
        (open, ``O_DIRECT`` off)."""
        with DirectFile(fd) as file:
            await self._write(file.write, progress)
            await in_thread(None, file.flush)
        return self.info

    async def _write(self, write: Callable[[Buffer], object], progress: Callable[[int], object] | None) -> None:
        """Hand every chunk as it arrives to a hashing thread and to ``write`` in another (each a
        ``bulk.ThreadedWriter``), and verify the hash at the end.

        Receiving, hashing and writing then overlap, the loop doing only the receiving. Hashed on the loop, as
        iterating a download does it, SHA-256 (half of ``dfs-cat -o``'s CPU) kept the loop from reading its socket
        while it ran; hashed in the writing thread, as before that, it waited there for the direct write of the stage
        before (``DirectFile``). The chunks are shared by the two threads, not copied: each holds at most two batches
        of them. (Tried again while ``DirectFile`` had a writing thread of its own to wait for the disk: one thread
        hashing then staging each batch made ``dfs-cat -o`` slower, new/old 0.70-0.97, median 0.85 in 4 pairs under
        load 6, for the same CPU.)"""
        hasher = self._hasher()
        hashing = ThreadedWriter(hasher.update) if hasher is not None else None
        writer = ThreadedWriter(write)
        try:
            async for chunk in self._received():
                if hashing is not None:
                    await hashing.write(chunk)
                await writer.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            if hashing is not None:
                await hashing.flush()
            await writer.flush()
        finally:
            await writer.settle()
            if hashing is not None:
                await hashing.settle()
        self._verify(hasher)

    def _hasher(self) -> hashlib._Hash | None:
        """A hasher for the bytes to come if they can be checked: the whole file, with a recorded SHA-256."""
        info = self.info
        whole = info.offset == 0 and info.length == info.size and info.sha256 is not None
        return hashlib.sha256() if whole else None

    def _verify(self, hasher: hashlib._Hash | None) -> None:
        if hasher is not None and hasher.digest() != self.info.sha256:
            raise ChecksumMismatch(
                f"checksum mismatch: the bytes received hash to {hasher.hexdigest()}, "
                f"the manager recorded {self.info.sha256.hex()}; do not trust the copy"  # type: ignore[union-attr]
            )

    async def _received(self) -> AsyncIterator[memoryview]:
        """The chunks as they arrive; if the manager is lost on the way, the rest from another one."""
        got = 0
        while True:
            try:
                async for chunk in self._chunks():
                    got += len(chunk)
                    yield chunk
                return
            except ManagerLost as lost:
                await self._resume(lost, got)

    async def _resume(self, lost: ManagerLost, got: int) -> None:
        """Ask another manager for the rest, after the ``got`` bytes already returned; only for the same file (same
        size and SHA-256), since the returned bytes cannot be taken back."""
        if not self._client._fail_over(f"{lost}; reading the rest of {self._name!r} from another manager"):
            raise lost
        first = self.info
        rest = await self._client.get(self._name, offset=first.offset + got, length=first.length - got)
        if (rest.info.size, rest.info.sha256) != (first.size, first.sha256) or first.sha256 is None:
            rest._abandon()
            raise ManagerLost(
                f"{lost}; {self._name!r} changed (or has no recorded checksum) before the rest could be read "
                "from another manager: read it again"
            ) from lost
        self._conn, self._body = rest._conn, rest._body

    def _abandon(self) -> None:
        if self._body.frames is not None:
            self._conn.abort()

    async def _chunks(self) -> AsyncIterator[memoryview]:
        body = self._body
        if body.frames is None:
            yield memoryview(body.data or b"")
            return
        try:
            async with self._client._using(self._conn):
                async for message in body.frames:
                    if type(message) is Data:
                        yield memoryview(message.data)
        finally:
            self._client._give_back(self._conn)


class Client:
    def __init__(
        self,
        address: str | None = None,
        security: Security | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """``address`` (``HOST:PORT``, or several managers as ``HOST:PORT,HOST:PORT,...``) defaults to $DFS_MANAGER,
        then 127.0.0.1:8000; ``security`` to the secret and CA named by $DFS_SECRET or $DFS_SECRET_FILE and
        $DFS_TLS_CA (none: plain TCP to an open cluster). ``on_retry`` is told, in one line, of every request asked
        again after its manager was lost (default: nobody)."""
        self.addresses = manager_addresses(address)
        self.security = security if security is not None else Security.load()
        self.on_retry = on_retry
        self._current = 0  # the manager last reached: tried first
        self._conn: Connection | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The manager the client talks to now (the last one reached)."""
        return self.addresses[self._current]

    async def __aenter__(self) -> Client:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def put(
        self,
        name: str,
        source: Source,
        *,
        size: int | None = None,
        sha256: bytes | None = None,
        on_retry: Callable[[str], None] | None = None,
        replace: bool = False,
        meta: dict[str, str] | None = None,
        meta_after: Callable[[], dict[str, str]] | None = None,
        sha256_after: Callable[[], bytes] | None = None,
    ) -> Stored:
        """Upload ``source`` as ``name``; returns its size and SHA-256 once it is durable.

        ``meta`` (text names to text values, at most MAX_META_BYTES of UTF-8 in all) is kept with the file and given
        back by ``stat``, ``list`` and ``get`` (``Download.info.meta``). ``meta_after`` is called once the source has
        been read to its end, and what it returns is kept too (added to ``meta``): metadata known only from the bytes,
        like their MD5. It travels in the upload's ``end`` (or in the ``put`` of a file sent whole).

        ``sha256_after`` is for a source that knows the SHA-256 of its own bytes (a gateway that hashed them as they
        streamed, or was told it by its own client): called once the source has been read to its end, it gives that
        digest, which the upload sends as its checksum instead of hashing every byte here. The node checks it as it
        checks any: a wrong digest is ``ChecksumMismatch`` and nothing is stored.

        A name that is taken is error 3 (``NameExists``), unless ``replace``: then the stored file is replaced
        atomically (a reader gets the old file or the new one, whole) once the new one is durable, and its bytes are
        removed; of concurrent replacements, the last to be stored wins.

        If the connection to the manager breaks on the way, the upload may or may not have been stored. When the
        client knows the file's SHA-256 by then (it had sent the whole file, or it can read the source again: bytes, a
        path, a seekable file), it asks once more, naming the size and SHA-256: the manager answers ``stored`` with
        ``already`` set if the first attempt was stored, and takes the upload afresh if it was not. ``on_retry`` is
        told why, first (default: the client's). With several managers, the second attempt goes to the next one, and
        is repeated while the lost attempt still holds the name (at most HELD_NAME_WAIT seconds).
        Otherwise, and if the second attempt fails too, it raises ``ManagerLost``.
        """
        on_retry = on_retry or self.on_retry
        check_name(name)
        check_meta(meta)
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as file:
                size = size if size is not None else file_size(file)
                return await self.put(
                    name,
                    file,
                    size=size,
                    sha256=sha256,
                    on_retry=on_retry,
                    replace=replace,
                    meta=meta,
                    meta_after=meta_after,
                    sha256_after=sha256_after,
                )
        if isinstance(source, bytes):
            size = len(source) if size is None else size
        rewind = _rewinder(source)
        sent = _Sent(meta_after=meta_after, sha256_after=sha256_after)
        header = Put(name, size, sha256, replace=replace or None, meta=meta or None)
        try:
            return await self._put(header, source, sent)
        except ManagerLost as lost:
            if sent.sha256 is None and rewind is None:
                raise ManagerLost(
                    f"{lost}; the upload was cut short, so it was not stored: send it again"  # no end, no commit
                ) from lost
            self._next_manager()
            if on_retry is not None:
                on_retry(f"{lost}; the upload may have been stored: asking again with its checksum{self._which()}")
            if sent.sha256 is None:
                assert rewind is not None
                rewind()
                sent.size, sent.sha256 = await _digest(source)  # type: ignore[arg-type]
            if sent.meta_after is not None and sent.late_meta is None:  # the source was read again just now
                sent.late_meta = sent.meta_after()
            whole_meta = {**(meta or {}), **(sent.late_meta or {})} or None
            again_header = dataclasses.replace(header, size=sent.size, sha256=sent.sha256, meta=whole_meta)

            async def again() -> Stored:
                if rewind is None:
                    return await self._ask_again(again_header)
                rewind()
                return await self._put(again_header, source, _Sent())  # type: ignore[arg-type]

            return await self._while_held(name, again)

    async def _while_held(self, name: str, attempt: Callable[[], Awaitable[Stored]]) -> Stored:
        """Repeat a retried upload while its name is held by the lost attempt itself: with several managers, the
        database keeps a lost manager's uploads in flight until its lease runs out, and only then frees their names.
        A name held by a stored file (of other bytes: the same ones are answered ``stored``) is refused at once."""
        deadline = time.monotonic() + HELD_NAME_WAIT
        while True:
            try:
                return await attempt()
            except NameExists:
                if time.monotonic() > deadline or await self._exists(name):
                    raise
            await asyncio.sleep(HELD_NAME_POLL)

    async def _exists(self, name: str) -> bool:
        try:
            await self.stat(name)
        except FileNotFound:
            return False
        return True

    async def _put(self, header: Put, source: BinaryIO | bytes | AsyncIterable[bytes], sent: _Sent) -> Stored:
        conn = await self._connection()
        async with self._using(conn):
            async with contextlib.aclosing(_frames(source, sent)) as frames:
                return await send_file(conn, header, frames)

    async def _ask_again(self, header: Put) -> Stored:
        """Repeat a put whose source cannot be read again, naming its size and SHA-256: answered ``stored`` at once if
        the first attempt was stored (there are no bytes to send if it was not)."""
        conn = await self._connection()
        try:
            async with self._using(conn):
                return await send_upload(conn, header, _frames(_cannot_resend(), _Sent()))
        except _CannotResend:
            raise ManagerLost(
                "servers unavailable: the connection to the manager broke after the whole file was sent, and it was "
                "not stored; its source cannot be read again: send it again"
            ) from None

    async def get(self, name: str, *, offset: int = 0, length: int | None = None) -> Download:
        """Start a download; iterate the result for its chunks.

        The download owns the connection until its last chunk has been read; requests made meanwhile use a new one.
        """
        info, conn = await self._retrying(functools.partial(self._ask_get, Get(name, offset, length)))
        download = Download(self, conn, info, name)
        if not conversation_of(conn).idle:  # a stream follows: the download owns the connection until its end
            self._conn = None
        return download

    async def _ask_get(self, request: Get) -> tuple[Sending, Connection]:
        conn = await self._connection()
        async with self._using(conn):
            await conn.send(request)
            return await conn.expect(Sending), conn

    async def get_file(self, name: str, target: str | os.PathLike[str] | BinaryIO, **range_: int | None) -> Sending:
        """Download ``name`` into a path or a binary file object; returns what was sent."""
        download = await self.get(name, **range_)  # type: ignore[arg-type]
        if isinstance(target, str | os.PathLike):  # opened only now: a failed request leaves an existing file alone
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                return await download.save_to_fd(fd)
            finally:
                os.close(fd)
        return await download.save(target)

    async def read(self, name: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """The whole of ``name`` (or a range of it) in memory: for small files."""
        download = await self.get(name, offset=offset, length=length)
        return b"".join([bytes(chunk) async for chunk in download])

    async def delete(self, name: str) -> None:
        await self._call(Delete(name), Ok)

    async def stat(self, name: str) -> FileInfo:
        return (await self._retrying(functools.partial(self._call, Stat(name), Info))).file

    async def list(self, prefix: str = "", *, after: str | None = None) -> AsyncIterator[FileInfo]:
        """Every file whose name starts with ``prefix``, in byte order of the names, fetched a page at a time; with
        ``after``, only those whose names sort after it (to resume a listing after the last name seen)."""
        while True:
            page = await self._retrying(functools.partial(self._call, List(prefix, after), Listing))
            for info in page.files:
                yield info
            if not page.more or not page.files:
                return
            after = page.files[-1].name

    async def status(self) -> ClusterStatus:
        return await self._retrying(functools.partial(self._call, Status(), ClusterStatus))

    async def scrub(self) -> ScrubReport:
        """Have every node re-read every file and check it against its recorded SHA-256; waits for the whole report."""
        return await self._call(Scrub(), ScrubReport)

    async def drain(self, node_id: int, undo: bool = False, forget: bool = False) -> ClusterStatus:
        """Retire a storage node: its files move to the other nodes and it gets no new ones (``undo`` takes it back).
        Once it holds nothing and is stopped, ``forget`` drops it from the manager's records."""
        return await self._call(Drain(node_id, undo, forget), ClusterStatus)

    async def rebalance(self) -> ClusterStatus:
        """Start a rebalance (if none is running); returns the status as it starts."""
        return await self._call(Rebalance(), ClusterStatus)

    async def compose(
        self, name: str, parts: Sequence[str], *, meta: dict[str, str] | None = None, replace: bool = True
    ) -> Stored:
        """Store under ``name`` the stored files ``parts`` joined in order (a multipart upload's completion): the
        manager has one storage node build the file, fetching parts held elsewhere straight from their nodes, so no
        process holds it whole; it is committed like a ``put`` (``replace``, ``meta``), and then the parts are
        deleted. Returns the new file's size and SHA-256."""
        check_name(name)
        check_meta(meta)
        return await self._call(Compose(name, list(parts), replace or None, meta or None), Stored)

    # --- multipart uploads (for gateways; PROTOCOL.md 6.13) -----------------------------------------------------------

    async def create_upload(self, name: str, owner: str, *, meta: dict[str, str] | None = None) -> UploadInfo:
        """Begin a multipart upload that becomes the file ``name`` (with ``meta``) once completed; its record keeps
        ``owner``, whom every later call on it must name."""
        check_name(name)
        check_meta(meta)
        return (await self._call(CreateUpload(name, owner, meta or None), Upload)).upload

    async def upload(self, upload_id: str) -> UploadInfo:
        """The record of an upload in progress, or ``NoSuchUpload``."""
        return (await self._retrying(functools.partial(self._call, StatUpload(upload_id), Upload))).upload

    async def put_part(
        self,
        upload_id: str,
        number: int,
        source: Source,
        *,
        owner: str,
        size: int | None = None,
        md5: Callable[[], bytes | None] | None = None,
        sha256_after: Callable[[], bytes] | None = None,
    ) -> bytes:
        """Store ``source`` as part ``number`` of the upload, replacing a part of that number sent before (whose bytes
        are then removed); returns the part's MD5. The bytes become a file under the upload's hidden prefix, which no
        listing shows, then the part is recorded. ``md5`` says the MD5 of what was sent once it is all sent, for a
        source that hashes as it streams (a gateway checking Content-MD5); without it the client hashes the bytes.
        ``sha256_after`` is ``put``'s."""
        check_part_number(number)
        hasher = None
        name = f"{part_prefix(upload_id)}{number:05d}.{secrets.token_hex(8)}"
        async with contextlib.AsyncExitStack() as reading:
            if md5 is None:
                hasher = hashlib.md5()
                source = await reading.enter_async_context(contextlib.aclosing(_hashed(source, hasher)))
            await self.put(name, source, size=size, sha256_after=sha256_after)
        digest = hasher.digest() if hasher is not None else md5() if md5 is not None else None
        if digest is None:
            raise ValueError("put_part's md5 gave no MD5 once the part was sent")
        await self._call(PutPart(upload_id, owner, number, name, digest), Ok)
        return digest

    async def parts(self, upload_id: str, *, after: int = 0) -> AsyncIterator[UploadPart]:
        """The recorded parts of an upload numbered above ``after``, by number, fetched a page at a time."""
        while True:
            page = await self._retrying(functools.partial(self._call, ListParts(upload_id, after), Parts))
            for part in page.parts:
                yield part
            if not page.more or not page.parts:
                return
            after = page.parts[-1].number

    async def uploads(self, prefix: str = "", *, after: tuple[str, str] | None = None) -> AsyncIterator[UploadInfo]:
        """The uploads in progress whose names start with ``prefix``, by name then id; with ``after`` (a name and an
        upload id), only those after it. Fetched a page at a time."""
        while True:
            request = ListUploads(prefix, *(after or (None, None)))
            page = await self._retrying(functools.partial(self._call, request, Uploads))
            for upload in page.uploads:
                yield upload
            if not page.more or not page.uploads:
                return
            after = (page.uploads[-1].name, page.uploads[-1].upload_id)

    async def complete_upload(
        self, upload_id: str, parts: Sequence[tuple[int, bytes]], *, owner: str, meta: dict[str, str] | None = None
    ) -> Stored:
        """Store the upload's file: the parts (number, MD5), in ascending order of number, joined by one storage node
        (no process holds the file whole), with ``meta`` (else the upload's own); then the upload and all its parts
        are removed. ``InvalidPart`` if a part was not recorded with that MD5."""
        check_meta(meta)
        chosen = [ChosenPart(number, md5) for number, md5 in parts]
        return await self._call(CompleteUpload(upload_id, owner, chosen, meta), Stored)

    async def abort_upload(self, upload_id: str, *, owner: str) -> None:
        """Forget the upload and remove its parts."""
        await self._call(AbortUpload(upload_id, owner), Ok)

    async def expire_uploads(self, age: float) -> builtins.list[UploadInfo]:
        """Abort every upload begun more than ``age`` seconds ago (and sweep away parts whose upload is gone); returns
        those aborted, at most MAX_LIST_PAGE a call."""
        return (await self._call(ExpireUploads(age), Uploads)).uploads

    async def create_bucket(self, name: str, owner: str) -> BucketInfo:
        """Record bucket ``name`` (its objects are the files named ``name/KEY``), owned by ``owner``.
        ``BucketOwnedByYou`` or ``BucketExists`` if the name is taken."""
        return (await self._call(CreateBucket(name, owner), Bucket)).bucket

    async def delete_bucket(self, name: str, owner: str) -> None:
        """Forget bucket ``name``: ``NoSuchBucket``, ``BucketNotYours`` unless ``owner`` owns it, ``BucketNotEmpty``
        while any file name starts with ``name/``."""
        await self._call(DeleteBucket(name, owner), Ok)

    async def bucket(self, name: str) -> BucketInfo:
        """The record of bucket ``name``, or ``NoSuchBucket``."""
        return (await self._call(StatBucket(name), Bucket)).bucket

    async def buckets(self) -> builtins.list[BucketInfo]:
        """Every bucket (of every owner), in byte order of the names."""
        return (await self._call(ListBuckets(), Buckets)).buckets

    async def _call(self, request: Message, answer: type[M]) -> M:
        conn = await self._connection()
        async with self._using(conn):
            await conn.send(request)
            return await conn.expect(answer)

    async def _retrying(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run a request that is safe to repeat; if its manager is lost on the way, ask the next manager, each
        manager in the list once."""
        for _ in range(len(self.addresses) - 1):
            try:
                return await request()
            except ManagerLost as lost:
                if not self._fail_over(f"{lost}; asking the next manager"):
                    raise
        return await request()

    def _fail_over(self, why: str) -> bool:
        """Move on from a lost manager to the next one, and say so; False if there is no other to ask."""
        if len(self.addresses) == 1:
            return False
        self._next_manager()
        if self.on_retry is not None:
            self.on_retry(f"{why}: {self._where()}")
        return True

    def _next_manager(self) -> None:
        self._current = (self._current + 1) % len(self.addresses)

    def _where(self) -> str:
        return format_address(self.address)

    def _which(self) -> str:
        """`` (of HOST:PORT)``, naming the manager asked, when there are several."""
        return f" (of {self._where()})" if len(self.addresses) > 1 else ""

    async def _connection(self) -> Connection:
        if self._conn is not None and (self._conn.closed or self._conn.peer_closed):
            self._conn.abort()  # the manager closed it (idle too long, or restarted): open a fresh one
            self._conn = None
        if self._conn is None:
            self._conn = await self._open()
        return self._conn

    async def _open(self) -> Connection:
        """A connection to the first manager that answers, from the one last reached on, in the list's order."""
        failures = []
        for _ in self.addresses:
            try:
                return await Connection.open(*self.address, role="client", security=self.security)
            except ConnectionLost as err:
                failures.append(f"{self._where()} ({err})")
                self._next_manager()
        which = "the manager at " if len(failures) == 1 else "any of the managers: "
        raise ServersUnavailable(
            f"servers unavailable: cannot reach {which}{', '.join(failures)}; start one with "
            "`dfsd manager` (or `dfsd cluster`), or point --manager / $DFS_MANAGER at it"
        ) from None

    def _using(self, conn: Connection) -> _Using:
        return _Using(self, conn)

    def _give_back(self, conn: Connection) -> None:
        """A download's connection becomes the client's again if its stream was read to the end (else it is out of
        step) and the client has no new one by now."""
        if conn.closed:
            return
        if self._conn is None and conversation_of(conn).idle:
            self._conn = conn
        else:
            conn.abort()


class _Using:
    """Runs one exchange on a connection: a failure that may leave it out of step drops it."""

    def __init__(self, client: Client, conn: Connection) -> None:
        self._client, self._conn = client, conn

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, err: BaseException | None, _tb: object) -> None:
        if kind is None or (isinstance(err, DfsError) and conversation_of(self._conn).idle):
            return  # a clean answer (a download's stream may follow), or an error answer: the connection is in step
        self._conn.abort()
        if self._client._conn is self._conn:
            self._client._conn = None
        if isinstance(err, ConnectionLost):
            raise ManagerLost(f"servers unavailable: lost the connection to the manager ({err})") from err


def file_size(file: BinaryIO) -> int | None:
    """The size of a regular file, None for a pipe, a terminal or a device (whose size says nothing of its bytes)."""
    status = os.fstat(file.fileno())
    return status.st_size if stat.S_ISREG(status.st_mode) else None


@dataclasses.dataclass
class _Sent:
    """What an upload has told the manager of its whole file: its size and SHA-256, once known (inline: from the start;
    streamed: once the end frame goes out)."""

    size: int | None = None
    sha256: bytes | None = None
    meta_after: Callable[[], dict[str, str]] | None = None  # ``put``'s: what the end adds to the metadata
    sha256_after: Callable[[], bytes] | None = None  # ``put``'s: the source's own SHA-256, once it has ended
    late_meta: dict[str, str] | None = None  # what it gave, once the end went out


class _CannotResend(Exception):
    """A retried upload was not stored after all, and its source (a pipe) cannot be read again."""


async def _cannot_resend() -> AsyncIterator[Buffer]:
    """The source of a retry that has no bytes to send again: it fails if the manager asks for them (``ok``)."""
    nothing: tuple[Buffer, ...] = ()
    for chunk in nothing:
        yield chunk
    raise _CannotResend()


def _rewinder(source: BinaryIO | bytes | AsyncIterable[bytes]) -> Callable[[], object] | None:
    """How to read ``source`` again from where it starts now; None if it cannot be (a pipe, a stream of chunks)."""
    if isinstance(source, bytes):
        return lambda: None
    if isinstance(source, AsyncIterable) or not source.seekable():
        return None
    start = source.tell()
    return lambda: source.seek(start)


async def _digest(source: BinaryIO | bytes) -> tuple[int, bytes]:
    """The size and SHA-256 of the rest of ``source``, read and hashed in a thread."""
    hasher = hashlib.sha256()
    size = 0
    async with contextlib.aclosing(_chunks(source, hasher)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
    return size, hasher.digest()


async def _frames(source: BinaryIO | bytes | AsyncIterable[bytes], sent: _Sent) -> AsyncGenerator[Data | End, None]:
    """The upload stream of ``source``: data frames, then an end frame with their SHA-256 (recorded in ``sent``),
    computed here unless the source says it (``sent.sha256_after``)."""
    hasher: Any = hashlib.sha256() if sent.sha256_after is None else _SaidDigest(sent.sha256_after)
    size = 0
    async with contextlib.aclosing(_chunks(source, hasher)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            yield Data(chunk)
    sent.size, sent.sha256 = size, hasher.digest()
    sent.late_meta = sent.meta_after() if sent.meta_after is not None else None
    yield End(sent.sha256, meta=sent.late_meta or None)


class _SaidDigest:
    """The hasher of a source that hashes its own bytes: feeding it costs nothing, and its digest is the one the
    source says once it has ended."""

    def __init__(self, said: Callable[[], bytes]) -> None:
        self.digest = said

    def update(self, data: Buffer) -> None:
        pass


async def _hashed(source: Source, hasher: Any) -> AsyncGenerator[Buffer, None]:
    """The bytes of ``source`` (a path, a file, bytes or chunks), passed on as they are fed to ``hasher``."""
    with contextlib.ExitStack() as opened:
        if isinstance(source, str | os.PathLike):
            source = opened.enter_context(open(source, "rb"))
        async with contextlib.aclosing(_chunks(source, hasher)) as chunks:
            async for chunk in chunks:
                yield chunk


async def _chunks(source: BinaryIO | bytes | AsyncIterable[bytes], hasher: Any) -> AsyncGenerator[Buffer, None]:
    """The bytes of ``source`` in chunks of at most CHUNK_SIZE, each fed to ``hasher`` before it is yielded. Close
    it (``aclosing``) rather than drop it: a file is read ahead by a thread, which closing waits for."""
    if isinstance(source, bytes):
        view = memoryview(source)
        for start in range(0, len(view), CHUNK_SIZE):
            hasher.update(view[start : start + CHUNK_SIZE])
            yield view[start : start + CHUNK_SIZE]
    elif isinstance(source, AsyncIterable):
        async for chunk in source:
            view = memoryview(chunk)
            for start in range(0, len(view), CHUNK_SIZE):
                hasher.update(view[start : start + CHUNK_SIZE])
                yield view[start : start + CHUNK_SIZE]
    else:
        async with contextlib.aclosing(_read_ahead(source, hasher)) as read:
            async for chunk in read:
                yield chunk


async def _read_ahead(source: BinaryIO, hasher: Any) -> AsyncGenerator[bytes, None]:
    """The chunks of a file, read and hashed in a thread, a regular file's one trip ahead of the caller.

    Reads go to a thread: a pipe or a terminal may take its time, and the loop must keep serving the answer. A
    regular file (seekable) is read READ_BATCH chunks a trip, each trip costing two wake-ups, and the next trip is
    read while the loop sends this one: reading, hashing and sending overlap, and the loop (which hashed before) only
    sends. A pipe is read one chunk a trip, so that a slow one starts at once, and only when asked for: a failed
    upload never waits for input that may not come. The trip under way is waited for however this ends (``finish``):
    nobody must rewind or close the source while a thread still reads it. (Measured and not kept: the hashing in a
    thread of its own, so that a chunk read is sent without waiting for its SHA-256, as a node taking the upload
    hashes: 1 GiB dfs-push, 5 pairs under load 6-8, new/old 0.65-1.16, median 0.85, for the same CPU.)"""
    if not source.seekable():
        while chunks := await in_thread(None, _read_chunks, source, 1, hasher):
            for chunk in chunks:
                yield chunk
        return
    loop = asyncio.get_running_loop()
    trip = loop.run_in_executor(None, _read_chunks, source, READ_BATCH, hasher)
    try:
        while chunks := await finish(trip):
            trip = loop.run_in_executor(None, _read_chunks, source, READ_BATCH, hasher)
            for chunk in chunks:
                yield chunk
    finally:
        with contextlib.suppress(Exception):
            await finish(trip)


def _read_chunks(source: BinaryIO, count: int, hasher: Any) -> builtins.list[bytes]:
    """(In a thread.) Up to ``count`` chunks of ``source``, fewer at its end, none past it, each fed to ``hasher``."""
    chunks = []
    for _ in range(count):
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            break
        hasher.update(chunk)
        chunks.append(chunk)
    return chunks

"""Error codes and the exceptions that carry them.

Every error a peer can see travels as an ``error`` frame holding a numeric code and a message. In code each code is one
exception class, found through one registry, so callers branch on the type (or ``.code``), never on message text.
Codes 1-4 are the original project's and are never renumbered; later codes are appended.

``ProtocolError`` is the one exception the decoder raises for bytes it cannot accept: whatever a peer sends, decoding
either yields a valid message or raises ``ProtocolError``; any other exception is a bug.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ErrorCode(IntEnum):
    SERVERS_UNAVAILABLE = 1
    NOT_FOUND = 2
    NAME_EXISTS = 3
    FILE_UNAVAILABLE = 4
    BAD_REQUEST = 5
    PROTOCOL_ERROR = 6
    CHECKSUM_MISMATCH = 7
    STORAGE_FULL = 8
    NOT_AUTHORISED = 9
    INTERNAL = 10
    NODE_ID_IN_USE = 11
    BUCKET_OWNED_BY_YOU = 12
    BUCKET_EXISTS = 13
    BUCKET_NOT_EMPTY = 14
    NO_SUCH_BUCKET = 15
    BUCKET_NOT_YOURS = 16
    NO_SUCH_UPLOAD = 17
    INVALID_PART = 18


class DfsError(Exception):
    """An error with a wire code. ``str(err)`` is the message a user reads."""

    code: ClassVar[ErrorCode]
    title: ClassVar[str]

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.title)

    @property
    def message(self) -> str:
        return str(self.args[0])

    def describe(self) -> str:
        """The line a tool prints: ``error N: message``."""
        return f"error {int(self.code)}: {self.message}"


class ServersUnavailable(DfsError):
    code = ErrorCode.SERVERS_UNAVAILABLE
    title = "servers unavailable: no storage node is up; start one with `dfsd storage --id N --manager HOST:PORT`"


class FileNotFound(DfsError):
    code = ErrorCode.NOT_FOUND
    title = "file does not exist"


class NameExists(DfsError):
    code = ErrorCode.NAME_EXISTS
    title = "file name already exists; delete it first or choose another name"


class FileUnavailable(DfsError):
    code = ErrorCode.FILE_UNAVAILABLE
    title = "file unavailable: the storage node holding it is down; try again when it is back"


class BadRequest(DfsError):
    code = ErrorCode.BAD_REQUEST
    title = "bad request"


class ProtocolError(DfsError):
    """The peer sent bytes that break the protocol; the connection cannot continue."""

    code = ErrorCode.PROTOCOL_ERROR
    title = "protocol error"


class LocalProtocolError(Exception):
    """We broke the order of frames ourselves (sent a frame that is not ours to send now): a bug in our own code.

    The counterpart of ``ProtocolError``, which blames the peer; like h11's LocalProtocolError it has no wire code and
    is never sent, because the peer did nothing wrong.
    """


class ChecksumMismatch(DfsError):
    code = ErrorCode.CHECKSUM_MISMATCH
    title = "checksum mismatch: the bytes do not match their SHA-256; nothing was kept"


class StorageFull(DfsError):
    code = ErrorCode.STORAGE_FULL
    title = "storage full: no storage node has room for this file; free space or add a node"


class NotAuthorised(DfsError):
    code = ErrorCode.NOT_AUTHORISED
    title = "not authorised"


class InternalError(DfsError):
    code = ErrorCode.INTERNAL
    title = "internal error; see the server's log"


class NodeIdInUse(DfsError):
    code = ErrorCode.NODE_ID_IN_USE
    title = "another live storage node already uses this id; give this node another --id"


class BucketOwnedByYou(DfsError):
    code = ErrorCode.BUCKET_OWNED_BY_YOU
    title = "the bucket already exists, and it is yours"


class BucketExists(DfsError):
    code = ErrorCode.BUCKET_EXISTS
    title = "the bucket already exists, and belongs to another owner; choose another name"


class BucketNotEmpty(DfsError):
    code = ErrorCode.BUCKET_NOT_EMPTY
    title = "the bucket is not empty; delete the files under its name first"


class NoSuchBucket(DfsError):
    code = ErrorCode.NO_SUCH_BUCKET
    title = "no such bucket"


class BucketNotYours(DfsError):
    code = ErrorCode.BUCKET_NOT_YOURS
    title = "the bucket belongs to another owner"


class NoSuchUpload(DfsError):
    code = ErrorCode.NO_SUCH_UPLOAD
    title = "no such multipart upload: it was never created, or it was completed, aborted or expired"


class InvalidPart(DfsError):
    code = ErrorCode.INVALID_PART
    title = "a part named for the completion was not uploaded, or not with that MD5; list the parts and try again"


_BY_CODE: dict[int, type[DfsError]] = {cls.code: cls for cls in DfsError.__subclasses__()}


def error_from_wire(code: int, message: str) -> DfsError:
    """The exception for an ``error`` frame; an unknown code (from a newer peer) becomes ``InternalError``."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return InternalError(f"error {code}: {message}")
    return cls(message)

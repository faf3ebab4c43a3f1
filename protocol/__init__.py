"""The dfsd wire protocol, sans-I/O: bytes in, messages out; messages in, bytes out. See PROTOCOL.md."""

from .errors import (
    BadRequest,
    ChecksumMismatch,
    DfsError,
    ErrorCode,
    FileNotFound,
    FileUnavailable,
    InternalError,
    NameExists,
    NodeIdInUse,
    NotAuthorised,
    ProtocolError,
    ServersUnavailable,
    StorageFull,
    error_from_wire,
)
from .framing import FrameDecoder, decode_body, encode, encode_parts
from .limits import CHUNK_SIZE, MAX_FRAME_SIZE, MAX_LIST_PAGE, MAX_NAME_BYTES, PROTOCOL_VERSION, check_name, check_range
from .messages import CATALOGUE, Message

__all__ = [
    "CATALOGUE",
    "CHUNK_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_LIST_PAGE",
    "MAX_NAME_BYTES",
    "PROTOCOL_VERSION",
    "BadRequest",
    "ChecksumMismatch",
    "DfsError",
    "ErrorCode",
    "FileNotFound",
    "FileUnavailable",
    "FrameDecoder",
    "InternalError",
    "Message",
    "NameExists",
    "NodeIdInUse",
    "NotAuthorised",
    "ProtocolError",
    "ServersUnavailable",
    "StorageFull",
    "check_name",
    "check_range",
    "decode_body",
    "encode",
    "encode_parts",
    "error_from_wire",
]  # fmt: skip

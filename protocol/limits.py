"""Protocol limits and the rules for file names, shared by every peer so a client can refuse what a server would."""

from __future__ import annotations

from .errors import BadRequest

PROTOCOL_VERSION = 1

# A frame carries at most one data chunk (CHUNK_SIZE) plus a few dozen bytes of header, or one listing page. 4 MiB
# leaves room to raise the chunk size without a protocol change while capping what a hostile peer can make us buffer.
MAX_FRAME_SIZE = 4 * 1024 * 1024

# 1 MiB chunks amortise per-frame costs (a CBOR header, a syscall, a hash update) to noise while keeping every hop's
# buffer small; measured throughput flattens above ~256 KiB. (2 MiB, measured for 1 GiB dfs-push and dfs-cat -o, 4
# pairs under load 5-7: each process's CPU fell by at most 0.04 s per GiB, the rates within noise, and the peak memory
# of a node taking an upload rose from 59.5 to 78.5 MiB, of the manager from 52 to 61 MiB: its buffers hold two chunks.)
CHUNK_SIZE = 1024 * 1024

# A file of at most this many bytes travels inside its request or answer (``put``, ``store``, ``sending``) instead of as
# a stream: one frame each way instead of four, and no round trip for ``ok``. Small files are where per-frame costs
# dominate; 64 KiB keeps such a frame far below any allowed frame limit, whatever the name.
INLINE_MAX = 64 * 1024

# S3 allows 1024 bytes of UTF-8 per key; a gateway stores an object as BUCKET/KEY, and a bucket name has at most 63
# characters: 63 + 1 + 1024. A full listing page of such names stays under 1.2 MiB.
MAX_NAME_BYTES = 1088

# One listing page; with MAX_NAME_BYTES names the page still fits well inside MAX_FRAME_SIZE.
MAX_LIST_PAGE = 1000

# A file's metadata (``put.meta``): names and values together, in bytes of UTF-8. S3 allows 2 KiB of user metadata,
# and the headers a gateway keeps beside it (Content-Type and the like, an MD5) take a few hundred more; 8 KiB holds
# that with room to spare while a listing page of such files still fits a frame (``MAX_LISTING_BYTES``).
MAX_META_BYTES = 8 * 1024

# What one listing page may carry in names and metadata: the manager ends a page early rather than pass this, so that
# 1000 files with the longest names and the most metadata still come in frames below MAX_FRAME_SIZE.
MAX_LISTING_BYTES = 3 * 1024 * 1024

# A bucket's name: S3's longest (63); its owner's name. Both short, so that every bucket fits one ``buckets`` frame.
MAX_BUCKET_NAME_BYTES = 63
MAX_OWNER_BYTES = 255

# Buckets a cluster may hold: ``buckets`` answers them all in one frame (about 350 bytes each at most), and S3 itself
# allows an account 100 by default, 10,000 on request.
MAX_BUCKETS = 10_000

# Parts one ``compose`` may join: S3's most parts in a multipart upload.
MAX_COMPOSE_PARTS = 10_000

# Parts a multipart upload may hold, numbered 1 to this: S3's most.
MAX_UPLOAD_PARTS = MAX_COMPOSE_PARTS

# The names of multipart uploads' parts: ``PARTS_PREFIX + UPLOAD_ID + "/" + ...`` (``part_prefix``). They are ordinary
# files to every node and to the rebalancer, but no listing shows them, and the manager takes a ``put`` of such a name
# only for an upload in progress and a ``delete`` never: an upload's parts are removed with the upload (PROTOCOL.md,
# 6.13). A bucket name cannot begin with a dot, so no S3 object is ever here.
PARTS_PREFIX = ".multipart/"

# File ids per inventory page: 100,000 ids of up to 9 bytes each stay under 1 MiB.
INVENTORY_PAGE = 100_000

# File ids one ``remove`` names at most: the node unlinks them on its event loop, and 100 unlinks take about a
# millisecond there, short enough to keep other requests waiting no longer than one small write does.
REMOVE_BATCH = 100

# Largest integer any field may carry: sizes, offsets and ids fit SQLite's signed 64-bit INTEGER.
MAX_UINT = 2**63 - 1


def check_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Return ``name`` if it is a valid file name, else raise ``BadRequest`` saying why.

    Names are opaque keys: any non-empty UTF-8 string up to MAX_NAME_BYTES, except NUL (which C tools and SQLite
    bindings truncate at, so such a name could not be shown or typed faithfully). Names never become paths on disk.
    """
    if not name:
        raise BadRequest("bad request: the file name is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("bad request: the file name is not valid UTF-8 (it holds a lone surrogate)") from None
    if size > max_bytes:
        raise BadRequest(f"bad request: the file name is {size} bytes of UTF-8; the limit is {max_bytes}")
    if "\x00" in name:
        raise BadRequest("bad request: the file name holds a NUL character")
    return name


def part_prefix(upload_id: str) -> str:
    """The prefix of the names of upload ``upload_id``'s parts."""
    return f"{PARTS_PREFIX}{upload_id}/"


def is_part_name(name: str) -> bool:
    """Whether ``name`` lies in the parts' hidden namespace (``PARTS_PREFIX``)."""
    return name.startswith(PARTS_PREFIX)


def upload_of_part(name: str) -> str:
    """The upload id in a part's name (``is_part_name``)."""
    return name[len(PARTS_PREFIX) :].partition("/")[0]


def check_part_number(number: int) -> None:
    """A part is numbered 1 to MAX_UPLOAD_PARTS (``BadRequest`` otherwise)."""
    if not 1 <= number <= MAX_UPLOAD_PARTS:
        raise BadRequest(f"bad request: part numbers run from 1 to {MAX_UPLOAD_PARTS}, not {number}")


def check_sha256(digest: bytes | None) -> None:
    """A SHA-256 given with an upload must be 32 bytes: refuse it before any byte moves, not after the last."""
    if digest is not None and len(digest) != 32:
        raise BadRequest(f"bad request: a SHA-256 is 32 bytes, this one {len(digest)}")


def check_bucket(name: str, owner: str | None = None) -> None:
    """Refuse (``BadRequest``) a bucket name that could not prefix file names as ``NAME/``, or an owner's name that is
    empty or too long. The S3 naming rules are the gateway's to apply; these are the cluster's."""
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_BUCKET_NAME_BYTES:
        raise BadRequest(f"bad request: a bucket name holds 1 to {MAX_BUCKET_NAME_BYTES} bytes of UTF-8")
    if "/" in name or "\x00" in name:
        raise BadRequest("bad request: a bucket name holds no / and no NUL")
    check_name(name)  # valid UTF-8
    if owner is not None:
        check_owner(owner)


def check_owner(owner: str) -> None:
    """Refuse (``BadRequest``) the name of an owner (of a bucket, of a multipart upload) that is empty or too long."""
    if not 0 < len(owner.encode("utf-8", "surrogatepass")) <= MAX_OWNER_BYTES:
        raise BadRequest(f"bad request: an owner is named by 1 to {MAX_OWNER_BYTES} bytes of UTF-8")


def check_meta(meta: dict[str, str] | None) -> None:
    """Refuse (``BadRequest``) metadata larger than MAX_META_BYTES, before any byte of its file moves."""
    if meta is None:
        return
    try:
        size = meta_bytes(meta)
    except UnicodeEncodeError:
        raise BadRequest("bad request: the metadata is not valid UTF-8 (it holds a lone surrogate)") from None
    if size > MAX_META_BYTES:
        raise BadRequest(f"bad request: the metadata holds {size} bytes of UTF-8; the limit is {MAX_META_BYTES}")


def meta_bytes(meta: dict[str, str]) -> int:
    """The size of ``meta`` as the limit counts it: its names and values in UTF-8."""
    return sum(len(key.encode("utf-8")) + len(value.encode("utf-8")) for key, value in meta.items())


def check_range(size: int, offset: int, length: int | None) -> int:
    """The length of the byte range ``offset``/``length`` of a ``size``-byte file (None: to the end), or BadRequest."""
    if offset > size:
        raise BadRequest(f"bad request: offset {offset} is past the end of the file ({size} bytes)")
    if length is None:
        return size - offset
    if offset + length > size:
        raise BadRequest(
            f"bad request: {length} bytes from offset {offset} run past the end of the file ({size} bytes)"
        )
    return length


def check_inline(data: bytes | None, size: int | None) -> None:
    """Refuse (``BadRequest``) file bytes carried inline that are too many or disagree with the announced size."""
    if data is None:
        return
    if len(data) > INLINE_MAX:
        raise BadRequest(f"bad request: {len(data)} bytes inline; at most {INLINE_MAX} may be, send a stream instead")
    if size is not None and size != len(data):
        raise BadRequest(f"bad request: {len(data)} bytes inline, {size} were announced")

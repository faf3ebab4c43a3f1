"""The message catalogue: one frozen dataclass per message, its fields named as on the wire.

On the wire a message is a CBOR map whose ``"type"`` key names the message and whose other keys are its fields. A field
whose value is ``None`` is left out, and a missing optional field reads as ``None``; keys a receiver does not know are
ignored, so a later protocol version can add optional fields. Field types are checked exactly when a message is read
(``uint`` is a CBOR unsigned integer below 2**63, never a bool); any mismatch is a ``ProtocolError``.

Which message may follow which is not this module's business: the handshake's machines (``handshake.py``) and the
exchanges' (``exchanges.py``) hold that order, documented per exchange in PROTOCOL.md.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from .errors import DfsError, ProtocolError
from .limits import MAX_UINT

Buffer = bytes | bytearray | memoryview

R = TypeVar("R")

# The field names of every message and record class, in declaration order, noted once by ``record``: every frame sent
# walks them, and asking ``dataclasses.fields`` each time cost more than the CBOR encoding itself.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class Record:
    """Base of every message and nested record: ``==``, ``hash()`` and ``repr()`` over its fields, the same as the
    ones ``@dataclass`` generates, written once here instead (see ``record``)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELD_NAMES[type(self)])
        return f"{type(self).__qualname__}({fields})"

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELD_NAMES[type(self)])


@typing.dataclass_transform(frozen_default=True)
def record(cls: type[R]) -> type[R]:
    """``@dataclass(frozen=True, slots=True)`` with ``==``, ``hash()`` and ``repr()`` inherited from ``Record``: the
    dataclasses module compiles every method it generates on its own, and generating those three for each of the 59
    classes here took 9 of the 22 ms this module's import cost every process (every dfs-cat, dfs-push, ...)."""
    made: Any = dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)(cls)
    _FIELD_NAMES[made] = tuple(field.name for field in dataclasses.fields(made))
    return made


# --- records nested inside messages -----------------------------------------------------------------------------------


@record
class FileInfo(Record):
    """One file as the manager knows it."""

    name: str
    size: int
    sha256: bytes  # 32 bytes, SHA-256 of the whole file
    node: int  # id of the storage node that holds it
    created: float  # unix time the upload was acknowledged
    available: bool  # false while its node is down
    meta: dict[str, str] | None = None  # the metadata its put carried (none: absent)


@record
class BucketInfo(Record):
    """One bucket as the manager records it: the files under ``name/`` are its objects."""

    name: str
    owner: str
    created: float  # unix time it was created


@record
class UploadInfo(Record):
    """One multipart upload in progress, as the manager records it."""

    upload_id: str  # the manager's name for it: 32 hex digits
    name: str  # the file the completed upload becomes
    owner: str  # who began it, as the gateway names its user
    initiated: float  # unix time it was created
    meta: dict[str, str] | None = None  # what the completed file is to be stored with (none: nothing)


@record
class UploadPart(Record):
    """One recorded part of a multipart upload."""

    number: int  # 1 to MAX_UPLOAD_PARTS
    size: int
    md5: bytes  # 16 bytes: the MD5 of its bytes, as the gateway computed it (S3's part ETag)
    created: float  # unix time it was recorded


@record
class ChosenPart(Record):
    """One part a completion joins: its number and the MD5 it must have (else error 18)."""

    number: int
    md5: bytes


@record
class PartInfo(Record):
    """One source of a ``build``: stored file ``file_id`` of ``size`` bytes, held by the node at ``host``:``port``, or
    by the building node itself when they are absent."""

    file_id: int
    size: int
    host: str | None = None
    port: int | None = None


@record
class NodeInfo(Record):
    """One storage node as the manager knows it."""

    id: int
    host: str
    port: int
    up: bool
    files: int  # files the manager has placed on it
    used: int  # bytes of those files
    free: int  # free bytes on its disk, as last reported
    capacity: int  # size of its disk, as last reported
    last_seen: float  # unix time of its last heartbeat
    lost: int = 0  # files recorded on it whose bytes it no longer has
    orphans: int = 0  # files it held that no record names, removed when it last registered
    draining: bool = False  # being retired: its files are moving to other nodes, and it gets no new ones
    foreign: int = 0  # entries in its data directory that are not dfsd's, found when it last started: never touched


@record
class RebalanceInfo(Record):
    """Progress of the rebalancer."""

    running: bool
    moved: int  # files moved since the manager started
    failed: int  # moves that failed (each file stays where it was)
    remaining: int  # moves still planned in the current round
    auto: bool  # whether a node joining starts a rebalance by itself


@record
class ManagerInfo(Record):
    """One manager of the cluster, as recorded in the metadata database (several share one PostgreSQL database)."""

    address: str  # host:port where clients and storage nodes reach it
    up: bool  # it has renewed its record within the lease (the one answering is up)
    coordinator: bool  # it runs the cluster-wide jobs: rebalancing, reconciliation, orphan removal, drains
    database: str  # its metadata database: a SQLite path or a PostgreSQL URL without its password


# --- messages ---------------------------------------------------------------------------------------------------------


class Message(Record):
    """Base of every message; ``TYPE`` is the value of the ``"type"`` key."""

    TYPE: ClassVar[str]
    __slots__ = ()


@record
class Hello(Message):
    """First frame of every connection, from the side that connected."""

    TYPE = "hello"
    version: int
    role: str  # "client", "node" (a node's control session), "manager" or "peer" (data connections to a node)
    agent: str | None = None  # free text, e.g. "dfsd/0.1"
    nonce: bytes | None = None  # 32 random bytes when the connecting side holds the shared secret


@record
class Welcome(Message):
    """The answer to ``hello`` when the connection is accepted."""

    TYPE = "welcome"
    version: int
    agent: str | None = None
    nonce: bytes | None = None  # the server's 32 random bytes, when it requires the shared secret
    proof: bytes | None = None  # server_proof(secret, hello.nonce, nonce): the server knows the secret


@record
class Auth(Message):
    """Connecting side → server, after a ``welcome`` with a nonce: its client_proof; answered ``ok``."""

    TYPE = "auth"
    proof: bytes


@record
class Error(Message):
    """A request failed; ``code`` is an ErrorCode."""

    TYPE = "error"
    code: int
    message: str

    @classmethod
    def of(cls, err: DfsError) -> Error:
        return cls(int(err.code), err.message)


@record
class Ok(Message):
    """A request was accepted (``put``/``store``: send the data now) or done (``delete``, ``remove``, ``register``)."""

    TYPE = "ok"


@record
class Data(Message):
    """One chunk of file bytes (at most CHUNK_SIZE)."""

    TYPE = "data"
    data: Buffer


@record
class End(Message):
    """The last frame of a stream of ``data`` frames."""

    TYPE = "end"
    sha256: bytes | None = None  # if given, the receiver refuses the stream unless the bytes hash to it
    meta: dict[str, str] | None = None  # ending a put: metadata known only now (the bytes' MD5), added to put.meta


@record
class Put(Message):
    """Client → manager: upload a file under ``name``: its bytes in ``data`` (at most INLINE_MAX), answered by
    ``stored``; or, without ``data``, as a stream after the answer ``ok``."""

    TYPE = "put"
    name: str
    size: int | None = None  # if given, the upload fails unless exactly this many bytes arrive
    sha256: bytes | None = None  # if given, the upload fails unless the bytes hash to it
    data: bytes | None = None  # the whole file, if it is small
    replace: bool | None = None  # true: a stored file of this name is replaced (atomically) instead of error 3
    meta: dict[str, str] | None = None  # text names to text values kept with the file (at most MAX_META_BYTES)


@record
class Stored(Message):
    """The bytes are durable (fsynced on the node, committed by the manager)."""

    TYPE = "stored"
    size: int
    sha256: bytes
    already: bool | None = None  # true: the put named size and sha256, and its name held exactly those bytes already


@record
class Get(Message):
    """Client → manager: download ``length`` bytes (all if absent) of ``name`` from ``offset``."""

    TYPE = "get"
    name: str
    offset: int = 0
    length: int | None = None


@record
class Sending(Message):
    """The answer to ``get``/``fetch``: the ``length`` bytes from ``offset``, in ``data`` if there are at most
    INLINE_MAX of them, else following as ``data`` frames and an ``end``."""

    TYPE = "sending"
    size: int  # size of the whole file
    offset: int
    length: int
    sha256: bytes | None = None  # SHA-256 of the whole file, when the sender knows it
    data: bytes | None = None  # the bytes themselves, exactly when length <= INLINE_MAX
    meta: dict[str, str] | None = None  # manager → client: the file's metadata, if its put carried any
    created: float | None = None  # manager → client: unix time the file was stored (as ``FileInfo.created``)


@record
class Delete(Message):
    TYPE = "delete"
    name: str


@record
class Stat(Message):
    TYPE = "stat"
    name: str


@record
class Info(Message):
    """The answer to ``stat``."""

    TYPE = "info"
    file: FileInfo


@record
class List(Message):
    """Client → manager: names starting with ``prefix``, in byte order, after ``after`` (for paging)."""

    TYPE = "list"
    prefix: str = ""
    after: str | None = None
    limit: int | None = None  # at most MAX_LIST_PAGE; the manager may return fewer


@record
class Listing(Message):
    TYPE = "listing"
    files: list[FileInfo]
    more: bool  # true if names after the last one returned may match: ask again with ``after``


@record
class Compose(Message):
    """Client → manager: store under ``name`` one file made of the stored files ``parts``, in order, built on one
    storage node (no process holds the whole); the parts are deleted once it is committed. Answered by ``stored``."""

    TYPE = "compose"
    name: str
    parts: list[str]
    replace: bool | None = None  # as put's
    meta: dict[str, str] | None = None  # as put's


@record
class CreateBucket(Message):
    """Client → manager: record bucket ``name``, owned by ``owner``; answered by ``bucket``."""

    TYPE = "create_bucket"
    name: str
    owner: str


@record
class DeleteBucket(Message):
    """Client → manager: forget bucket ``name`` (``owner`` must own it; no file name may start with ``name/``);
    answered by ``ok``."""

    TYPE = "delete_bucket"
    name: str
    owner: str


@record
class StatBucket(Message):
    """Client → manager: the record of bucket ``name``; answered by ``bucket``."""

    TYPE = "stat_bucket"
    name: str


@record
class ListBuckets(Message):
    """Client → manager: every bucket, by name; answered by ``buckets``."""

    TYPE = "list_buckets"


@record
class Bucket(Message):
    """The answer to ``create_bucket`` and ``stat_bucket``."""

    TYPE = "bucket"
    bucket: BucketInfo


@record
class Buckets(Message):
    """The answer to ``list_buckets``: all of them (at most MAX_BUCKETS), in byte order of their names."""

    TYPE = "buckets"
    buckets: list[BucketInfo]


@record
class CreateUpload(Message):
    """Client → manager: begin a multipart upload that will become the file ``name``; answered by ``upload``."""

    TYPE = "create_upload"
    name: str
    owner: str
    meta: dict[str, str] | None = None  # kept for the completed file (at most MAX_META_BYTES)


@record
class StatUpload(Message):
    """Client → manager: the record of upload ``upload_id``; answered by ``upload`` (error 17 if there is none)."""

    TYPE = "stat_upload"
    upload_id: str


@record
class Upload(Message):
    """The answer to ``create_upload`` and ``stat_upload``."""

    TYPE = "upload"
    upload: UploadInfo


@record
class PutPart(Message):
    """Client → manager: the stored file ``name`` (under the upload's ``part_prefix``) is part ``number`` of upload
    ``upload_id``, with MD5 ``md5``; a part of that number recorded before is replaced and its file deleted. Answered
    by ``ok``."""

    TYPE = "put_part"
    upload_id: str
    owner: str  # must be the upload's (else 16)
    number: int
    name: str
    md5: bytes


@record
class ListParts(Message):
    """Client → manager: the recorded parts of upload ``upload_id`` numbered above ``after``; answered by ``parts``."""

    TYPE = "list_parts"
    upload_id: str
    after: int = 0
    limit: int | None = None  # at most MAX_LIST_PAGE; the manager may return fewer


@record
class Parts(Message):
    TYPE = "parts"
    parts: list[UploadPart]  # by number
    more: bool  # true if parts numbered above the last one may follow: ask again with ``after``


@record
class ListUploads(Message):
    """Client → manager: the uploads in progress whose names start with ``prefix``, by name then id, after
    ``after``; answered by ``uploads``."""

    TYPE = "list_uploads"
    prefix: str = ""
    after: str | None = None  # a name: uploads of later names, and of this one with ids above ``after_upload``
    after_upload: str | None = None
    limit: int | None = None  # at most MAX_LIST_PAGE; the manager may return fewer


@record
class Uploads(Message):
    """The answer to ``list_uploads`` and ``expire_uploads``."""

    TYPE = "uploads"
    uploads: list[UploadInfo]
    more: bool  # true if uploads of names after the last one returned may match: ask again with ``after``


@record
class CompleteUpload(Message):
    """Client → manager: store the upload's ``parts``, in this order, as its file, with ``meta`` (the upload's own
    if absent), built on one storage node like a ``compose``; the upload and all its parts are then removed. Answered
    by ``stored``."""

    TYPE = "complete_upload"
    upload_id: str
    owner: str  # must be the upload's (else 16)
    parts: list[ChosenPart]
    meta: dict[str, str] | None = None


@record
class AbortUpload(Message):
    """Client → manager: forget the upload and delete its parts; answered by ``ok`` (error 17 if there is none)."""

    TYPE = "abort_upload"
    upload_id: str
    owner: str  # must be the upload's (else 16)


@record
class ExpireUploads(Message):
    """Client → manager: abort every upload created more than ``age`` seconds ago, and delete parts left behind by
    uploads that no longer exist; answered by ``uploads``: those it aborted (at most MAX_LIST_PAGE a request)."""

    TYPE = "expire_uploads"
    age: float


@record
class Status(Message):
    TYPE = "status"


@record
class ClusterStatus(Message):
    TYPE = "cluster_status"
    nodes: list[NodeInfo]
    files: int
    bytes: int
    lost: list[str] | None = None  # names of lost files (at most 100)
    rebalance: RebalanceInfo | None = None
    managers: list[ManagerInfo] | None = None  # every manager recorded in the database, the answering one included


@record
class Rebalance(Message):
    """Client → manager: start a rebalance now; answered by ``cluster_status``."""

    TYPE = "rebalance"


@record
class Drain(Message):
    """Client → manager: retire node ``node_id`` (move every file off it; no new ones), with ``undo`` take it back,
    with ``forget`` drop an empty, stopped node from the records; answered by ``cluster_status``."""

    TYPE = "drain"
    node_id: int
    undo: bool = False
    forget: bool = False  # instead: forget the node, which must be empty and stopped


@record
class Scrub(Message):
    """Client → manager: have every up node re-read every file it holds and check it against the recorded SHA-256."""

    TYPE = "scrub"


@record
class ScrubReport(Message):
    """The answer to ``scrub``, once every file has been checked."""

    TYPE = "scrub_report"
    checked: int  # files read back whole (corrupt ones included)
    bytes: int  # their bytes
    corrupt: list[str]  # names whose bytes no longer hash to their record
    missing: list[str]  # names whose node no longer has them (now marked lost)
    skipped: int  # files not checked: their node was down or failed


@record
class Register(Message):
    """Storage node → manager, first on its control session."""

    TYPE = "register"
    node_id: int
    host: str  # where the node serves data connections
    port: int
    capacity: int
    free: int
    foreign: int = 0  # entries in its data directory that are not dfsd's (it never counts, serves or deletes them)


@record
class Inventory(Message):
    """Storage node → manager, after ``register``: the ids of the complete files it holds, a page at a time."""

    TYPE = "inventory"
    file_ids: list[int]
    more: bool  # false on the last page


@record
class Heartbeat(Message):
    """Storage node → manager, every heartbeat interval on its control session; the manager answers ``ok``."""

    TYPE = "heartbeat"
    free: int
    capacity: int


@record
class Store(Message):
    """Manager → storage node: keep the file with id ``file_id``; like ``put``, its bytes are in ``data``, or follow
    as a stream after ``ok``; the answer is ``stored``."""

    TYPE = "store"
    file_id: int
    size: int | None = None
    sha256: bytes | None = None
    data: bytes | None = None


@record
class Build(Message):
    """Manager → storage node: write the new file ``file_id`` as the bytes of ``parts``, in order (its own read from its
    disk, the others fetched from the nodes that hold them); answered by ``stored``."""

    TYPE = "build"
    file_id: int
    parts: list[PartInfo]


@record
class Fetch(Message):
    """Manager → storage node: send bytes of file ``file_id``; answered like ``get``."""

    TYPE = "fetch"
    file_id: int
    offset: int = 0
    length: int | None = None


@record
class Transfer(Message):
    """Manager → source node: copy file ``file_id`` to the node at ``host``:``port`` (which checks ``sha256``).

    The source sends it there as a ``store`` exchange and answers with the target's ``stored`` (or error).
    """

    TYPE = "transfer"
    file_id: int
    host: str
    port: int
    sha256: bytes


@record
class Verify(Message):
    """Manager → storage node: read file ``file_id`` whole and answer ``ok`` if it hashes to ``sha256`` (else 7)."""

    TYPE = "verify"
    file_id: int
    sha256: bytes


@record
class ListHeld(Message):
    """Manager → storage node: the ids of the complete files it holds now, above ``after`` (None: from the lowest), at
    most INVENTORY_PAGE of them; answered by one ``inventory`` page, whose ``more`` says whether ids above its last one
    remain. How a coordinator takes the inventory of a node whose registration it did not reconcile."""

    TYPE = "list_held"
    after: int | None = None


@record
class Remove(Message):
    """Manager → storage node: delete file ``file_id``, and each in ``also``; ``ok`` (also for any already gone).
    ``also`` lets the copies of many deletes go in one request (at most REMOVE_BATCH ids in all): one round trip,
    frame and request for each would cost the manager and the node more than the unlinks."""

    TYPE = "remove"
    file_id: int
    also: list[int] | None = None


# --- wire conversion --------------------------------------------------------------------------------------------------

Reader = Callable[[Any], Any]


def _read_uint(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise ProtocolError(f"protocol error: expected an unsigned integer below 2**63, got {_kind(value)}")
    return value


def _read_float(value: Any) -> float:
    if type(value) is int and abs(value) <= MAX_UINT:
        return float(value)
    if type(value) is not float or not math.isfinite(value):
        raise ProtocolError(f"protocol error: expected a finite number, got {value!r}"[:120])
    return value


def _exact(kind: type) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not kind:
            raise ProtocolError(f"protocol error: expected {kind.__name__}, got {_kind(value)}")
        return value

    return read


def _optional(read: Reader) -> Reader:
    return lambda value: None if value is None else read(value)


def _map_of(read_key: Reader, read_value: Reader) -> Reader:
    def read_map(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise ProtocolError(f"protocol error: expected a map, got {_kind(value)}")
        return {read_key(key): read_value(item) for key, item in value.items()}

    return read_map


def _list_of(read: Reader) -> Reader:
    def read_list(value: Any) -> list[Any]:
        if type(value) is not list:
            raise ProtocolError(f"protocol error: expected an array, got {_kind(value)}")
        return [read(item) for item in value]

    return read_list


def _kind(value: Any) -> str:
    return type(value).__name__


_SCALARS: dict[Any, Reader] = {
    int: _read_uint,
    float: _read_float,
    str: _exact(str),
    bool: _exact(bool),
    bytes: _exact(bytes),
    Buffer: _exact(bytes),
}


def _reader_for(hint: Any) -> Reader:
    if hint in _SCALARS:
        return _SCALARS[hint]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _optional(_reader_for(inner))
    if typing.get_origin(hint) is list:
        return _list_of(_reader_for(args[0]))
    if typing.get_origin(hint) is dict:
        return _map_of(_reader_for(args[0]), _reader_for(args[1]))
    if dataclasses.is_dataclass(hint):
        return _record_reader(hint)
    raise TypeError(f"no wire type for {hint!r}")


def _record_reader(cls: Any) -> Reader:
    """A function that checks a decoded CBOR map against ``cls``'s fields and builds an instance."""
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING
        fields.append((field.name, _reader_for(hints[field.name]), required, field.default))

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise ProtocolError(f"protocol error: expected a map, got {_kind(value)}")
        kwargs = {}
        for name, read_field, required, default in fields:
            item = value.get(name)
            if item is None:
                if required:
                    raise ProtocolError(f"protocol error: {cls.__name__.lower()} lacks the field {name!r}")
                kwargs[name] = default
            else:
                try:
                    kwargs[name] = read_field(item)
                except ProtocolError as err:
                    raise ProtocolError(f"{err.message} in field {name!r} of {cls.__name__.lower()}") from None
        return cls(**kwargs)

    return read


def _to_wire(value: Any) -> Any:
    """A message's field value as CBOR takes it: records become maps of their non-None fields, lists are walked."""
    names = _FIELD_NAMES.get(type(value))
    if names is not None:
        return _fields_to_wire(value, names, {})
    if type(value) is list:
        return [_to_wire(item) for item in value]
    return value


def _fields_to_wire(value: Any, names: tuple[str, ...], wire: dict[str, Any]) -> dict[str, Any]:
    for name in names:
        item = getattr(value, name)
        if item is not None:
            wire[name] = _to_wire(item) if type(item) is list or type(item) in _FIELD_NAMES else item
    return wire


CATALOGUE: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello, Welcome, Auth, Error, Ok, Data, End, Put, Stored, Get, Sending, Delete, Stat, Info, List, Listing,
        Status, ClusterStatus, Rebalance, Drain, Scrub, ScrubReport, Register, Inventory, Heartbeat, Store, Fetch,
        Transfer, Verify, ListHeld, Remove, CreateBucket, DeleteBucket, StatBucket, ListBuckets, Bucket, Buckets,
        Compose, Build,
        CreateUpload, StatUpload, Upload, PutPart, ListParts, Parts, ListUploads, Uploads, CompleteUpload, AbortUpload,
        ExpireUploads,
    )
}  # fmt: skip

# Each message type's reader, made the first time one arrives: a process reads a few of the types, and making them all
# at import cost every process (every run of a tool) 2 ms.
_READERS: dict[str, Reader] = {}


def message_to_wire(message: Message) -> dict[str, Any]:
    """The CBOR map for ``message``: ``"type"`` first, then its non-None fields."""
    return _fields_to_wire(message, _FIELD_NAMES[type(message)], {"type": message.TYPE})


def message_from_wire(value: Any) -> Message:
    """Check a decoded CBOR item and build its message, or raise ``ProtocolError``."""
    if type(value) is not dict:
        raise ProtocolError(f"protocol error: a frame must hold a CBOR map, not {_kind(value)}")
    kind = value.get("type")
    if type(kind) is not str:
        raise ProtocolError('protocol error: the frame\'s map has no text "type" key')
    read = _READERS.get(kind)
    if read is None:
        cls = CATALOGUE.get(kind)
        if cls is None:
            raise ProtocolError(f"protocol error: unknown message type {kind[:64]!r}")
        read = _READERS[kind] = _record_reader(cls)
    message: Message = read(value)
    return message

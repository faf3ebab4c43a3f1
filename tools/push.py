"""dfs-push: upload files (or standard input) to the cluster.

One PATH is stored under its base name, or under --name. Several PATHs, or -r DIR, are uploaded one after another on
one connection, each under its base name; the files under a directory are stored under their paths relative to it, with
"/" separators (``dfs-push -r photos`` stores ``photos/2026/a.jpg`` as ``2026/a.jpg``).

With several files every file is tried even after one fails: each failure is reported on standard error as it
happens, one summary line ``pushed N files (X bytes), M failed`` ends the run, and the exit status is the first
failure's. Two files that would get the same name are refused before anything is sent (exit 64), so a command line
never half-succeeds because of itself.

If the connection to the manager breaks during an upload, the upload may or may not have been stored. When its
SHA-256 is known by then (the whole file had gone, or the file can be read again: anything but a pipe), dfs-push says
so in one line and asks once more, with the checksum: the manager answers that the file was already stored, or takes it
afresh. Exit status 1 after that means the upload was not stored (or its outcome is still unknown: see the README).

A progress bar (bytes, rate, time left) is drawn on standard error when it is a terminal; -q turns it off, together with
the closing "stored" or summary line, leaving only errors.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from dfsd.client import Client, DfsError, Stored, file_size

from . import progress
from .common import EXIT_NO_INPUT, ArgumentParser, Failures, printable, run, say

if TYPE_CHECKING:
    from tqdm import tqdm

PROG = "dfs-push"


@dataclass(frozen=True)
class Upload:
    path: str  # a local path, or "-" for standard input
    name: str  # the name to store it under
    size: int  # as seen when the command line was read (0 if unknown): only for the progress bar's total


class CannotRead(Exception):
    """A local file failed while being read; ``__cause__`` is the OSError."""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog=PROG,
        description="Upload each PATH to the cluster, under its base name by default.\n"
        "With several files (or -r DIR) every one is tried: failures are reported as they happen, and one line\n"
        "'pushed N files (X bytes), M failed' ends the run.",
    )
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="a file to upload; - for standard input (needs --name); a directory with -r",
    )
    parser.add_argument("--name", help="store the one PATH under NAME instead of its base name")
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help='upload every file under each directory PATH, named by its path relative to PATH (with "/")',
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no closing line; errors only")
    args = parser.parse_args(argv)

    several = len(args.paths) > 1 or any(path != "-" and os.path.isdir(path) for path in args.paths)
    if "-" in args.paths and len(args.paths) > 1:
        parser.error("standard input (-) is pushed alone, with --name NAME")
    if args.paths == ["-"] and not args.name:
        parser.error("reading standard input (-) needs --name NAME")
    if args.name and several:
        parser.error("--name names a single file; with several files (or -r DIR) each keeps its own name")
    uploads: list[Upload] = []
    failures = Failures(PROG)  # from here on, including directories -r cannot list
    for path in args.paths:
        if path != "-" and os.path.isdir(path):
            if not args.recursive:
                parser.error(f"{path} is a directory; give -r to upload the files under it")
            uploads.extend(_walk(path, failures))
            continue
        name = args.name or os.path.basename(path)
        if not name:
            parser.error(f"{path!r} has no base name; give --name NAME")
        uploads.append(Upload(path, name, _size(path)))
    _refuse_clashes(uploads, parser)

    async def push(client: Client) -> int:
        return await _push_all(client, uploads, failures, several=several, quiet=args.quiet)

    return run(PROG, args.manager, push)


async def _push_all(client: Client, uploads: list[Upload], failures: Failures, *, several: bool, quiet: bool) -> int:
    pushed = pushed_bytes = 0
    stored: Stored | None = None
    total = None if any(upload.path == "-" for upload in uploads) else sum(upload.size for upload in uploads)
    with progress.bar(total, uploads[0].name if uploads else "", progress.wanted(quiet)) as bar:
        for upload in uploads:
            bar.set_description_str(progress.label(upload.name))
            start = bar.n
            subject = upload.path if several else None
            try:
                stored = await _push_one(client, upload, bar)
            except DfsError as err:
                failures.error(err, subject)
            except CannotRead as err:
                _cannot_read(failures, upload.path, err.__cause__)
            else:
                pushed += 1
                pushed_bytes += stored.size
                if stored.already and not quiet:
                    say(f"{PROG}: {printable(upload.name)}: it had been stored already, by the attempt cut off")
                continue
            bar.update(max(0, start + upload.size - bar.n))  # the rest of a failed file counts as done, for the ETA
    if not quiet:
        if several:
            files = "file" if pushed == 1 else "files"
            say(f"pushed {pushed} {files} ({pushed_bytes} bytes), {failures.count} failed")
        elif stored is not None:
            say(f"stored {printable(uploads[0].name)} ({stored.size} bytes, sha256 {stored.sha256.hex()})")
    return failures.status


def _cannot_read(failures: Failures, path: str, err: BaseException | None) -> None:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    failures.add(EXIT_NO_INPUT, f"cannot read {path}: {reason}", "check that the path exists and is readable")


async def _push_one(client: Client, upload: Upload, bar: progress.Tally | tqdm) -> Stored:
    start = bar.n

    def retrying(reason: str) -> None:
        say(f"{PROG}: {printable(upload.name)}: {reason}")
        bar.update(start - bar.n)  # the bytes go again

    if upload.path == "-":
        source = _Counted.of(sys.stdin.buffer, bar)
        return await client.put(upload.name, source, size=_regular_size(sys.stdin.buffer), on_retry=retrying)
    try:
        file = open(upload.path, "rb")
    except OSError as err:
        raise CannotRead() from err
    with file:
        return await client.put(upload.name, _Counted.of(file, bar), size=file_size(file), on_retry=retrying)


class _Counted(io.RawIOBase):
    """A file read through the client (in its reading thread), each read counted on ``bar``; a read that fails is
    ``CannotRead``. Seekable exactly when the file is: the client reads a seekable source again to retry an upload."""

    def __init__(self, file: BinaryIO, bar: progress.Tally | tqdm) -> None:
        super().__init__()
        self._file = file
        self._bar = bar

    @classmethod
    def of(cls, file: BinaryIO, bar: progress.Tally | tqdm) -> BinaryIO:
        return typing.cast(BinaryIO, cls(file, bar))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._file.seekable()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self._file.read(size)
        except OSError as err:
            raise CannotRead() from err
        self._bar.update(len(chunk))
        return chunk


def _regular_size(file: BinaryIO) -> int | None:
    """The size of standard input if it is a regular file (``< file``), else None."""
    with contextlib.suppress(OSError, ValueError):
        return file_size(file)
    return None


def _walk(root: str, failures: Failures) -> Iterator[Upload]:
    """The regular files under ``root``, in name order, named by their paths relative to it with "/" separators.
    Anything else (a socket, a broken symbolic link, a link to a directory, which is not followed) is skipped with a
    warning; a directory that cannot be listed is a failure, reported at once."""

    def unreadable(err: OSError) -> None:
        _cannot_read(failures, f"{err.filename} (none of its files are pushed)", err)

    for directory, subdirectories, files in os.walk(root, onerror=unreadable):
        subdirectories.sort()
        for entry in subdirectories:
            if os.path.islink(os.path.join(directory, entry)):
                say(
                    f"{PROG}: warning: skipping {os.path.join(directory, entry)}: a link to a directory is not followed"
                )
        for entry in sorted(files):
            path = os.path.join(directory, entry)
            if not os.path.isfile(path):
                say(f"{PROG}: warning: skipping {path}: not a regular file")
                continue
            name = os.path.relpath(path, root).replace(os.sep, "/")
            yield Upload(path, name, _size(path))


def _size(path: str) -> int:
    if path == "-":
        return 0
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # reported when the upload opens it


def _refuse_clashes(uploads: list[Upload], parser: ArgumentParser) -> None:
    seen: dict[str, str] = {}
    for upload in uploads:
        if upload.name in seen:
            parser.error(
                f"{seen[upload.name]} and {upload.path} would both be stored as {printable(upload.name)}; "
                "push one of them on its own with --name"
            )
        seen[upload.name] = upload.path


if __name__ == "__main__":
    sys.exit(main())

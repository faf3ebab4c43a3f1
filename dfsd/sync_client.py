"""The client for scripts: the same calls as ``dfsd.client.Client``, without async.

Each ``SyncClient`` runs a private uvloop event loop and keeps its connection to the manager between calls.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

import uvloop

from .client import Client, Source
from .protocol.messages import BucketInfo, ClusterStatus, FileInfo, Sending, Stored


class SyncClient:
    def __init__(self, address: str | None = None, on_retry: Callable[[str], None] | None = None) -> None:
        """``address``: one manager or several (``HOST:PORT,HOST:PORT``); ``on_retry``: told of every request asked
        again of another manager (see ``dfsd.client``)."""
        self._runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self._client = Client(address, on_retry=on_retry)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def put(
        self,
        name: str,
        source: Source,
        *,
        size: int | None = None,
        sha256: bytes | None = None,
        on_retry: Callable[[str], None] | None = None,
        replace: bool = False,
        meta: dict[str, str] | None = None,
    ) -> Stored:
        put = self._client.put(name, source, size=size, sha256=sha256, on_retry=on_retry, replace=replace, meta=meta)
        return self._runner.run(put)

    def get_file(
        self, name: str, target: str | os.PathLike[str] | BinaryIO, *, offset: int = 0, length: int | None = None
    ) -> Sending:
        return self._runner.run(self._client.get_file(name, target, offset=offset, length=length))

    def read(self, name: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return self._runner.run(self._client.read(name, offset=offset, length=length))

    def delete(self, name: str) -> None:
        self._runner.run(self._client.delete(name))

    def stat(self, name: str) -> FileInfo:
        return self._runner.run(self._client.stat(name))

    def list(self, prefix: str = "", *, after: str | None = None) -> Iterator[FileInfo]:
        files = self._client.list(prefix, after=after)

        async def next_file() -> FileInfo:
            return await anext(files)

        while True:
            try:
                yield self._runner.run(next_file())
            except StopAsyncIteration:
                return

    def status(self) -> ClusterStatus:
        return self._runner.run(self._client.status())

    def create_bucket(self, name: str, owner: str) -> BucketInfo:
        return self._runner.run(self._client.create_bucket(name, owner))

    def delete_bucket(self, name: str, owner: str) -> None:
        self._runner.run(self._client.delete_bucket(name, owner))

    def bucket(self, name: str) -> BucketInfo:
        return self._runner.run(self._client.bucket(name))

    def buckets(self) -> builtins.list[BucketInfo]:
        return self._runner.run(self._client.buckets())

"""A TCP proxy that can delay, black-hole or cut a link, for partition tests on a machine without netem or iptables.

It runs its own event loop in a thread, so it keeps forwarding while a test blocks (in ``LocalCluster.wait_for``, say).
A black-holed link accepts connections and swallows every byte in both directions, like a network that drops packets;
``heal`` lets bytes through again; ``cut`` aborts every connection open now; ``cut_after`` loses a server's answer.
With ``answers_lost`` set, a link forwards what clients send but swallows what servers send, keeping the connections
open: a server does what it was asked, and nobody hears it.
"""

from __future__ import annotations

import asyncio
import threading


class FaultProxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.delay = 0.0  # seconds to hold each chunk before forwarding it
        self.blackholed = False
        self.answers_lost = False
        self.captured: bytearray | None = None  # set to a bytearray to record every byte forwarded
        self.from_client: bytearray | None = None  # set to a bytearray to record the bytes clients send
        self.from_server: bytearray | None = None  # set to a bytearray to record the bytes the server sends
        self._cut_marker: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.address = ""

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def blackhole(self) -> None:
        self.blackholed = True

    def heal(self) -> None:
        self.blackholed = False
        self.answers_lost = False

    def cut_after(self, marker: bytes) -> None:
        """Once the bytes a client has sent contain ``marker`` (however the reads split them): cut that client off, and
        only it. The server gets every byte read so far (then an end of stream) and its answer is lost, as if the link
        had failed just after the request. Once; later connections go through untouched."""
        self._cut_marker = marker

    def cut(self) -> None:
        def abort_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(abort_all)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, client_writer),
            self._pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            writer.transport.abort()
            self._writers.discard(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: asyncio.StreamWriter | None = None
    ) -> None:
        """Forward ``reader`` to ``writer``; ``client`` is set on the client-to-server direction."""
        tail = b""
        while chunk := await reader.read(256 * 1024):
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.blackholed or (self.answers_lost and client is None):
                continue
            if self.captured is not None:
                self.captured += chunk
            recording = self.from_client if client is not None else self.from_server
            if recording is not None:
                recording += chunk
            writer.write(chunk)
            await writer.drain()
            marker = self._cut_marker
            if client is not None and marker is not None:
                seen = tail + chunk
                tail = seen[-(len(marker) - 1) :] if len(marker) > 1 else b""
                if marker in seen:
                    self._cut_marker = None
                    while writer.transport.get_write_buffer_size():  # every byte to the server first
                        await asyncio.sleep(0.001)
                    client.transport.abort()
                    writer.write_eof()
                    return
        writer.transport.abort()

"""A TCP proxy that can delay, black-hole or cut a link, for partition tests on a machine without netem or iptables.

It runs its own event loop in a thread, so it keeps forwarding while a test blocks (in ``LocalCluster.wait_for``, say).
A black-holed link accepts connections and swallows every byte in both directions, like a network that drops packets;
``heal`` lets bytes through again; ``cut`` aborts every connection open now; ``cut_after`` loses a server's answer.
With ``answers_lost`` set, a link forwards what clients send but swallows what servers send, keeping the connections
open: a server does what it was asked, and nobody hears it. ``stall_after`` holds a request in the network until
``release``, and delivers it then even if its sender has died meanwhile.
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
        self._stall_marker: bytes | None = None
        self._released = asyncio.Event()
        self.holding = threading.Event()  # set once bytes a client sent are held (``stall_after``)
        self.stall_over = threading.Event()  # set once the server has closed the stalled connection
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

    def stall_after(self, marker: bytes) -> None:
        """Once the bytes a client has sent contain ``marker`` (however the reads split them): hold what that client
        sends next, until ``release``, and keep it even if the client dies meanwhile, as a stalled link would; the
        server then gets it late, followed by the end of the stream if the client is gone. Once."""
        self._stall_marker = marker

    def release(self) -> None:
        """Let the stalled bytes through; ``stall_over`` is set once the server has closed that connection (it has
        done all it was asked, and answered nobody if the client is gone)."""
        self._loop.call_soon_threadsafe(self._released.set)

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
        stalled, _ = await asyncio.gather(
            self._pipe(client_reader, upstream_writer, client_writer),
            self._pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            writer.transport.abort()
            self._writers.discard(writer)
        if stalled is True:
            self.stall_over.set()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: asyncio.StreamWriter | None = None
    ) -> bool:
        """Forward ``reader`` to ``writer``; ``client`` is set on the client-to-server direction. True if it stalled
        (``stall_after``)."""
        tail = b""
        stall_tail = b""
        stalled = False
        while chunk := await _read(reader):
            if stalled:
                self.holding.set()
                await self._released.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.blackholed or (self.answers_lost and client is None):
                continue
            if self.captured is not None:
                self.captured += chunk
            recording = self.from_client if client is not None else self.from_server
            if recording is not None:
                recording += chunk
            if not await _forward(writer, chunk):
                continue  # the reader's peer is gone: what the other side still says is read and dropped
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
                    return False
            stall = self._stall_marker
            if client is not None and stall is not None and not stalled:
                seen = stall_tail + chunk
                stall_tail = seen[-(len(stall) - 1) :] if len(stall) > 1 else b""
                if stall in seen:
                    self._stall_marker = None
                    stalled = True
        if stalled:  # the client is gone: what it sent reaches the server when released, then the end of the stream
            await self._released.wait()
            writer.write_eof()
            return True
        writer.transport.abort()
        return False


async def _forward(writer: asyncio.StreamWriter, chunk: bytes) -> bool:
    """Write ``chunk``; False if the connection it goes to is gone."""
    if writer.transport.is_closing():
        return False
    try:
        writer.write(chunk)
        await writer.drain()
    except ConnectionError:
        return False
    return True


async def _read(reader: asyncio.StreamReader) -> bytes:
    """The next chunk, or b"" at the end of the stream, however it ends (a reset too)."""
    try:
        return await reader.read(256 * 1024)
    except ConnectionError:
        return b""

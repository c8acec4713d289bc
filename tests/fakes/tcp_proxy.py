"""A TCP proxy on 127.0.0.1 (port 0) that a test can cut and restore: a database outage
without touching the real database server.

cut() aborts every proxied connection and refuses new ones (accepted, then reset at
once, as a server that is restarting does); restore() lets connections through again.
lose_answer() cuts one connection after a given request reached the server, before its
answer gets back. Runs in a thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cut_connections = 0
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose: tuple[bytes, bytes] | None = None  # lose_answer()'s, until it happens
        self._lose_delay = 0.0
        self.lost_answers = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            self._abort_all()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, base: str) -> str:
        """``base`` (postgresql://user@host:port/db) pointed at the proxy."""
        scheme, rest = base.split("://", 1)
        auth, _, tail = rest.rpartition("@")
        _hostport, _, db = tail.partition("/")
        return f"{scheme}://{auth + '@' if auth else ''}127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        def go() -> None:
            self._up = False
            self._abort_all()

        self._loop.call_soon_threadsafe(go)

    def lose_answer(self, after: bytes, request: bytes, delay: float = 0.3) -> None:
        """On the connection that sends ``after``, the next data holding ``request`` goes
        to the server, its answer does not come back, and the connection is aborted
        ``delay`` s later: say a COMMIT done by the server that its client cannot know of.
        New connections go through as before."""

        def arm() -> None:
            self._lose, self._lose_delay = (after, request), delay

        self._loop.call_soon_threadsafe(arm)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_up", True)

    def _abort_all(self) -> None:
        for w in list(self._writers):
            self.cut_connections += 1
            w.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers |= {writer, up_writer}
        muted = asyncio.Event()
        try:
            await asyncio.gather(
                self._to_server(reader, up_writer, (writer, up_writer), muted),
                _pipe(up_reader, writer, muted),
            )
        finally:
            self._writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()

    async def _to_server(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        muted: asyncio.Event,
    ) -> None:
        seen_after = False
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                lose = self._lose
                if lose is None:
                    continue
                seen_after = seen_after or lose[0] in data
                if seen_after and lose[1] in data:
                    self._lose = None
                    self.lost_answers += 1
                    muted.set()
                    for w in pair:
                        self._loop.call_later(self._lose_delay, w.transport.abort)
        writer.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # RST instead of FIN: the client sees "connection reset", as from a dead server.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, muted: asyncio.Event
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            if not muted.is_set():
                writer.write(data)
                await writer.drain()
    writer.transport.abort()

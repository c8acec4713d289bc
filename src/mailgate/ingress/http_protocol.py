"""uvicorn's HTTP/1.1 protocol with one send per answer instead of two.

uvicorn writes an answer's status line and headers as soon as the app sends
``http.response.start``, and its body with ``http.response.body``: two ``send()`` calls
and, with TCP_NODELAY, two segments that both peers process. On loopback under load
those writes were a fifth of the relay's samples. Here the head waits for the next write
of its connection, which for every answer the API makes follows in the same step of the
loop; a head that nothing follows goes out at the loop's next iteration. Bytes keep their
order whatever is written: every write and close sends what waits first.

The subclass overrides ``connection_made``, asyncio's protocol method, of uvicorn's
``HttpToolsProtocol`` (tests/unit/test_private_names.py checks it is there).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1."
_HEAD_END = b"\r\n\r\n"
# Bodies up to this size go out in one send with their head; a bigger one is written as
# is after it, rather than copied into a joined buffer.
JOIN_MAX = 64 * 1024


class _HeadHolding:
    """An asyncio transport that holds back a response head until the next write."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) > JOIN_MAX:  # a message's source, say: not copied to save a send
                self._transport.write(head)
                self._transport.write(data)
            else:
                self._transport.write(head + data)
        elif data[:7] == _STATUS_LINE and data[-4:] == _HEAD_END:
            self._head = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        held = len(self._head) if self._head is not None else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, pause_reading, get_extra_info, abort, ...) as is.
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`_HeadHolding` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHolding(transport, self.loop))  # type: ignore[arg-type]

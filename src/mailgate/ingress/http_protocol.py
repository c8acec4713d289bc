"""uvicorn's HTTP/1.1 protocol with one send per answer instead of two, limits on what a
client may hold open, and JSON refusals.

uvicorn writes an answer's status line and headers as soon as the app sends
``http.response.start``, and its body with ``http.response.body``: two ``send()`` calls
and, with TCP_NODELAY, two segments that both peers process. On loopback under load
those writes were a fifth of the relay's samples. Here the head waits for the next write
of its connection, which for every answer the API makes follows in the same step of the
loop; a head that nothing follows goes out at the loop's next iteration. Bytes keep their
order whatever is written: every write and close sends what waits first.

Limits uvicorn leaves out (a hostile client could hold a connection, or memory, for as
long as it liked): a request head over MAX_HEAD bytes is refused 431; a head not whole
HEAD_TIMEOUT s after it began is refused 408; a body that stops arriving for BODY_IDLE s
ends the connection (the handler reading it sees the client gone); a connection that
sends nothing is closed after uvicorn's keep-alive timeout, as an idle one is. A request
the parser cannot read gets its 400 as the API's JSON error (``http_error``) instead of
uvicorn's text. A request that arrives in one read, the usual case, arms no timer.

The subclass overrides asyncio's protocol methods, httptools' parser callbacks and
uvicorn's ``send_400_response`` and keep-alive timer of uvicorn's ``HttpToolsProtocol``
(tests/unit/test_private_names.py checks they are there).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

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


MAX_HEAD = 64 * 1024  # bytes of a request line and headers (nginx: 4 x 8 KB; Node: 16 KB)
HEAD_TIMEOUT = 30.0  # s for a whole head, from its first byte (nginx's client_header_timeout)
BODY_IDLE = 60.0  # s a body may pause between two reads (nginx's client_body_timeout)
LINGER = 2.0  # s a refused client's bytes are still read and dropped (nginx's lingering_time)


def _refusal(status: bytes, code: str, message: str) -> bytes:
    body = b'{"error":{"code":"%s","message":"%s","field":null}}' % (
        code.encode(),
        message.encode(),
    )
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )


_BAD_REQUEST = _refusal(b"400 Bad Request", "http_error", "invalid HTTP request")
_HEAD_TOO_BIG = _refusal(
    b"431 Request Header Fields Too Large",
    "http_error",
    f"request line and headers over {MAX_HEAD} bytes",
)
_HEAD_TIMEOUT = _refusal(
    b"408 Request Timeout", "http_error", f"request headers not complete in {HEAD_TIMEOUT:g} s"
)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`_HeadHolding` transport, with limits."""

    # A request has begun and is not complete; its head is still being read, and its size.
    _partial = False
    _in_head = False
    _head_bytes = 0
    _stall: asyncio.TimerHandle | None = None
    _refused = False  # answered and half-closed: what still comes is dropped (_refuse)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHolding(transport, self.loop))  # type: ignore[arg-type]
        # Nothing sent yet: closed as an idle keep-alive connection is (data_received stops it).
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if not self._partial:
            if self._stall is not None:
                self._disarm()
        elif not self._in_head:
            self._disarm()  # the body moved on: its pause is timed from now
            self._stall = self.loop.call_later(BODY_IDLE, self._body_stalled)
        else:
            # Still in a head after this read: counted whole (what came before the head in
            # it too), so the limit may be passed by up to one read, never more.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._refuse(_HEAD_TOO_BIG)
            elif self._stall is None:
                self._stall = self.loop.call_later(HEAD_TIMEOUT, self._refuse, _HEAD_TIMEOUT)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._partial = self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._partial = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(_BAD_REQUEST)

    def _refuse(self, answer: bytes) -> None:
        """Answer, then half-close and drop what the client still sends for LINGER s
        before closing: closed at once with its bytes unread, the connection would be
        reset, and a client still sending could lose the answer."""
        self._disarm()
        if self.transport.is_closing() or self._refused:
            return
        self._refused = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def _body_stalled(self) -> None:
        self._stall = None
        log.info("closed a connection whose request body stalled for %g s", BODY_IDLE)
        self.transport.close()

    def _disarm(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

"""DATA for big messages, streamed in pieces instead of rebuilt whole.

aiosmtplib's ``data()`` makes the wire form of a message in three whole copies (line
endings normalised, leading dots doubled, the terminator appended), each as big as the
message, while the message itself is held too: for 20 concurrent 20 MB deliveries that
was most of the delivery process's 640 MB peak. Here a message from
:data:`STREAM_FROM` bytes on is cut at line ends into :data:`CHUNK`-sized pieces, each
put in wire form and written, waiting for the socket to drain between pieces: the same
bytes on the wire (tests/unit/test_smtp_data.py), a few hundred KB extra in memory.
Smaller messages go through ``data()`` as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiosmtplib
from aiosmtplib import SMTPDataError, SMTPResponse, SMTPServerDisconnected, SMTPTimeoutError
from aiosmtplib.protocol import LINE_ENDINGS_REGEX, PERIOD_REGEX

STREAM_FROM = 1024 * 1024  # bytes
CHUNK = 256 * 1024  # bytes per piece (cut at the next line end)
_START_INPUT = 354
_COMPLETED = 250


def wire_pieces(data: bytes) -> Iterator[bytes]:
    """``data`` as aiosmtplib sends it after DATA (CRLF line ends, leading dots doubled,
    a final CRLF), without the terminating ".": in pieces that start at line starts."""
    pos, end = 0, len(data)
    last = b""
    while pos < end:
        cut = data.find(b"\n", min(pos + CHUNK, end) - 1)
        stop = end if cut < 0 else cut + 1
        piece = PERIOD_REGEX.sub(b"..", LINE_ENDINGS_REGEX.sub(b"\r\n", data[pos:stop]))
        last = piece[-2:]
        yield piece
        pos = stop
    if last != b"\r\n":
        yield b"\r\n"


async def send_data(client: aiosmtplib.SMTP, data: bytes, *, timeout: float | None) -> SMTPResponse:
    """DATA with ``data``; raises as ``client.data`` does."""
    if len(data) < STREAM_FROM:
        return await client.data(data, timeout=timeout)
    protocol = client.protocol
    lock = protocol._command_lock if protocol is not None else None
    if protocol is None or lock is None:
        raise SMTPServerDisconnected("Connection lost")
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != _START_INPUT:
                raise SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            for piece in wire_pieces(data):
                protocol.write(piece)
                await protocol._drain_helper()
            protocol.write(b".\r\n")
            response = await protocol.read_response(timeout=timeout)
            if response.code != _COMPLETED:
                raise SMTPDataError(response.code, response.message)
            return response
    except (SMTPServerDisconnected, SMTPTimeoutError):
        client.close()
        raise
    except ConnectionError as exc:
        client.close()
        raise SMTPServerDisconnected(str(exc)) from exc

"""What the outbound SMTP conversation writes and reads past aiosmtplib's command API:
pipelined envelopes (RFC 2920), messages in BDAT chunks (RFC 3030) and big messages
streamed in pieces.

Every private name of aiosmtplib that mailgate uses is here (``SMTPProtocol._command_lock``,
``_response_pending`` and ``_drain_helper``); tests/unit/test_private_names.py checks them
against the installed version, and pyproject.toml caps aiosmtplib below its next minor
release.

**Pipelining.** With a server that offers PIPELINING, MAIL, every RCPT and DATA go out in
one write and their replies are read in order: two round trips per message instead of
three plus one per recipient, and fewer system calls and wake-ups on both sides.
aiosmtplib's protocol holds one reply at a time and drops data that arrives while the
reply it holds is not yet taken, which is what a server answering a group line by line
sends. So the group's replies are read by :class:`_Replies`, lent the transport with
asyncio's ``set_protocol`` for that long, and the message then goes through aiosmtplib's
protocol as usual.

**Chunking.** With a server that also offers CHUNKING (RFC 3030), MAIL, every RCPT and
``BDAT <size> LAST`` with the message itself go out in one write: one round trip per
message, and one write and one wake-up fewer on both sides than DATA's wait for 354. The
chunk is the message as it is (CRLF line ends), without DATA's doubled dots. Messages
from :data:`STREAM_FROM` bytes on still go through DATA, in pieces.

**Big messages.** aiosmtplib's ``data()`` makes the wire form of a message in three whole
copies (line endings normalised, leading dots doubled, the terminator appended), each as
big as the message, while the message itself is held too: for 20 concurrent 20 MB
deliveries that was most of the delivery process's 640 MB peak. Here a message from
:data:`STREAM_FROM` bytes on is cut at line ends into :data:`CHUNK`-sized pieces, each
put in wire form and written, waiting for the socket to drain between pieces: the same
bytes on the wire (tests/unit/test_smtp_wire.py), a few hundred KB extra in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import LINE_ENDINGS_REGEX, MAX_LINE_LENGTH, PERIOD_REGEX, SMTPProtocol

from mailgate.address_syntax import DOT_ATOM

STREAM_FROM = 1024 * 1024  # bytes
CHUNK = 256 * 1024  # bytes per piece (cut at the next line end)
START_INPUT = 354
COMPLETED = 250
RCPT_TAKEN = (250, 251)  # as aiosmtplib's rcpt() counts a recipient taken
_UNAVAILABLE = 421  # the server closes the connection after it (aiosmtplib closes too)
# What aiosmtplib 5.1.3 refuses in a command's arguments, and its longest reply; spelled
# out here because older releases within our range do not have these names.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_MAX_REPLY = MAX_LINE_LENGTH * 4


def wire_pieces(data: bytes) -> Iterator[bytes]:
    """``data`` as aiosmtplib sends it after DATA (CRLF line ends, leading dots doubled,
    a final CRLF), without the terminating ".": in pieces that start at line starts."""
    pos, end = 0, len(data)
    last = b""
    while pos < end:
        cut = data.find(b"\n", min(pos + CHUNK, end) - 1)
        stop = end if cut < 0 else cut + 1
        piece = _wire_form(data[pos:stop])
        last = piece[-2:]
        yield piece
        pos = stop
    if last != b"\r\n":
        yield b"\r\n"


def _wire_form(piece: bytes) -> bytes:
    """aiosmtplib's two substitutions, each only where it changes something: mail almost
    always has CRLF line ends only and no line starting with a dot, and the regular
    expressions cost 38 us for a 2 KB message, found or not (a count costs well under 1)."""
    piece = _crlf(piece)
    if piece.startswith(b".") or b"\n." in piece:
        piece = PERIOD_REGEX.sub(b"..", piece)
    return piece


def _crlf(piece: bytes) -> bytes:
    """``piece`` with every bare CR or LF made a CRLF, as aiosmtplib's data() does."""
    lines = piece.count(b"\n")
    if lines != piece.count(b"\r\n") or lines != piece.count(b"\r"):  # a bare CR or LF
        piece = LINE_ENDINGS_REGEX.sub(b"\r\n", piece)
    return piece


def chunk_form(data: bytes) -> bytes:
    """``data`` as a BDAT chunk carries it: the lines DATA would send (CRLF line ends, a
    final CRLF) without the doubled dots, which only DATA's terminator needs."""
    data = _crlf(data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# An address parseaddr() gives back as it is: dot-atom ASCII local part, letters, digits,
# hyphens and dots in the domain. Anything else goes through aiosmtplib's quote_address.
_PLAIN_ADDRESS = re.compile(rf"{DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _quoted(address: str) -> str:
    """``<address>`` as aiosmtplib's quote_address() makes it (11 us each: email.utils'
    parseaddr), for a plain address without parsing it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


def envelope_commands(
    sender: str, recipients: Sequence[str], options: Sequence[str], encoding: str
) -> list[bytes]:
    """MAIL and one RCPT per recipient, each line as aiosmtplib's mail() and rcpt() write
    it; ValueError (as theirs) for an argument with a line break or NUL."""
    mail = [b"MAIL", b"FROM:" + _quoted(sender).encode(encoding)]
    mail += [option.encode("ascii") for option in options]
    lines = [mail] + [[b"RCPT", b"TO:" + _quoted(r).encode(encoding)] for r in recipients]
    for args in lines:
        for arg in args:
            if _CONTROL.search(arg):
                raise ValueError("Command arg contains a prohibited control character")
    return [b" ".join(args) + b"\r\n" for args in lines]


def parse_reply(buffer: bytearray) -> SMTPResponse | None:
    """The first complete reply in ``buffer``, taken out of it, or None: the lines, limits
    and errors of aiosmtplib's own reader."""
    if len(buffer) > _MAX_REPLY:
        raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
    offset = 0
    lines: list[bytes] = []
    while (end := buffer.find(b"\n", offset)) >= 0:
        line = bytes(buffer[offset : end + 1])
        if len(line) > MAX_LINE_LENGTH:
            raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", errors="ignore")
            raise SMTPResponseException(
                SMTPStatus.invalid_response.value, f"Malformed SMTP response line: {text}"
            ) from None
        offset = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
    return None


class _Replies(asyncio.Protocol):
    """The transport's protocol while a pipelined group's replies come in (module doc)."""

    def __init__(self, owner: SMTPProtocol, transport: asyncio.Transport) -> None:
        self.owner = owner
        self.transport = transport
        self.buffer = bytearray()
        self.replies: list[SMTPResponse] = []
        self.error: SMTPException | None = None
        self.lost: tuple[Exception | None] | None = None  # connection_lost's argument
        self.changed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while (reply := parse_reply(self.buffer)) is not None:
                self.replies.append(reply)
        except SMTPResponseException as exc:
            self.error = exc
        self.changed.set()

    def eof_received(self) -> bool:
        self.error = self.error or SMTPServerDisconnected("Unexpected EOF received")
        self.changed.set()
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)
        self.error = self.error or SMTPServerDisconnected("Connection lost")
        self.changed.set()

    def pause_writing(self) -> None:
        self.owner.pause_writing()

    def resume_writing(self) -> None:
        self.owner.resume_writing()

    async def take(self, count: int, timeout: float | None) -> list[SMTPResponse]:
        """The first ``count`` replies; raises what ended the connection, or a timeout."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.replies) < count:
                    if self.error is not None:
                        raise self.error
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError as exc:
            raise SMTPReadTimeoutError("Timed out waiting for server response") from exc
        return self.replies[:count]


@contextlib.contextmanager
def _lent(protocol: SMTPProtocol) -> Iterator[_Replies]:
    """The connection's transport lent to a :class:`_Replies` for a group's replies;
    given back after, with a loss passed on to aiosmtplib."""
    # Not checked with isinstance: uvloop's TLS transport is no asyncio.WriteTransport.
    transport = cast(asyncio.Transport | None, protocol.transport)
    if transport is None or transport.is_closing():
        raise SMTPServerDisconnected("Connection lost")
    replies = _Replies(protocol, transport)
    transport.set_protocol(replies)
    try:
        yield replies
    finally:
        transport.set_protocol(protocol)
        if replies.lost is not None:
            protocol.connection_lost(replies.lost[0])


async def _group(
    protocol: SMTPProtocol, commands: bytes, count: int, timeout: float | None
) -> list[SMTPResponse]:
    """Write ``commands`` and read their ``count`` replies."""
    with _lent(protocol) as replies:
        replies.transport.write(commands)
        return await replies.take(count, timeout)


def _locked(client: aiosmtplib.SMTP) -> tuple[SMTPProtocol, asyncio.Lock]:
    """The client's protocol and its command lock (held while we write and read)."""
    protocol = client.protocol
    lock = protocol._command_lock if protocol is not None else None
    if protocol is None or lock is None:
        raise SMTPServerDisconnected("Connection lost")
    return protocol, lock


async def _message(protocol: SMTPProtocol, data: bytes, timeout: float | None) -> SMTPResponse:
    """The message after a 354, the terminating dot, and the reply to it."""
    protocol._response_pending = True  # what arrives now is the reply to this
    if len(data) < STREAM_FROM:
        protocol.write(b"".join(wire_pieces(data)) + b".\r\n")
    else:
        for piece in wire_pieces(data):
            protocol.write(piece)
            await protocol._drain_helper()
        protocol.write(b".\r\n")
    return await protocol.read_response(timeout=timeout)


class PipelineLost(Exception):
    """A reply of a pipelined transaction was lost or malformed (the connection is closed):
    ``stage`` says where, "mail" or "data", and ``cause`` is aiosmtplib's exception."""

    def __init__(self, stage: str, cause: SMTPException) -> None:
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause


class _Progress:
    """How far a pipelined transaction got, for PipelineLost: "mail", then "data" once the
    message is on its way."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = "mail"


@contextlib.contextmanager
def _lost_as(client: aiosmtplib.SMTP, progress: _Progress) -> Iterator[None]:
    """An error of the connection inside: the connection closed, PipelineLost raised."""
    try:
        yield
    except SMTPException as exc:
        client.close()
        raise PipelineLost(progress.stage, exc) from exc
    except ConnectionError as exc:
        client.close()
        raise PipelineLost(progress.stage, SMTPServerDisconnected(str(exc))) from exc


@dataclass(frozen=True, slots=True)
class Pipelined:
    """The replies to a pipelined transaction, in order."""

    envelope: list[SMTPResponse]  # MAIL's, then one per RCPT
    data: SMTPResponse | None  # DATA's; None for a BDAT chunk
    message: SMTPResponse | None  # the end of the message's (or BDAT's); None if not read


async def pipelined(
    client: aiosmtplib.SMTP,
    commands: Sequence[bytes],
    data: bytes,
    *,
    command_timeout: float | None,
    data_timeout: float | None,
) -> Pipelined:
    """``commands`` (MAIL and the RCPTs) and DATA in one write, then the message if MAIL
    succeeded, a recipient was taken and DATA was answered 354.

    Raises PipelineLost. A connection left where a next transaction cannot follow (354
    with no message to send, 421) is closed too.
    """
    progress = _Progress()  # "mail" until the group's replies are in: nothing was sent yet
    with _lost_as(client, progress):
        protocol, lock = _locked(client)
        async with lock:
            group = b"".join(commands) + b"DATA\r\n"
            *envelope, start = await _group(protocol, group, len(commands) + 1, command_timeout)
            taken = any(r.code in RCPT_TAKEN for r in envelope[1:])
            if start.code == START_INPUT and envelope[0].code == COMPLETED and taken:
                progress.stage = "data"
                message = await _message(protocol, data, data_timeout)
                return Pipelined(envelope, start, message)
    if start.code == START_INPUT or any(r.code == _UNAVAILABLE for r in (*envelope, start)):
        # A server that said 354 waits for a message we will not send (an empty one
        # could be delivered): the connection is given up instead.
        client.close()
    return Pipelined(envelope, start, None)


async def chunked(
    client: aiosmtplib.SMTP,
    commands: Sequence[bytes],
    data: bytes,
    *,
    command_timeout: float | None,
    data_timeout: float | None,
) -> Pipelined:
    """``commands`` (MAIL and the RCPTs), ``BDAT <size> LAST`` and the message in one
    write; the BDAT reply is read if MAIL succeeded and a recipient was taken.

    Raises PipelineLost: stage "mail" until the envelope's replies are in, "data" after
    (the message went out with the commands). Anything but success closes the connection:
    the server must have read and dropped the chunk (RFC 3030), but a connection is not
    trusted with the next transaction on that word.
    """
    chunk = chunk_form(data)
    progress = _Progress()
    message: SMTPResponse | None = None
    with _lost_as(client, progress):
        protocol, lock = _locked(client)
        async with lock:
            with _lent(protocol) as replies:
                head = b"".join(commands) + b"BDAT %d LAST\r\n" % len(chunk)
                replies.transport.write(head + chunk)
                envelope = await replies.take(len(commands), command_timeout)
                taken = any(r.code in RCPT_TAKEN for r in envelope[1:])
                if envelope[0].code == COMPLETED and taken:
                    progress.stage = "data"
                    message = (await replies.take(len(commands) + 1, data_timeout))[-1]
    if message is None or message.code != COMPLETED:
        client.close()
    return Pipelined(envelope, None, message)


async def send_data(client: aiosmtplib.SMTP, data: bytes, *, timeout: float | None) -> SMTPResponse:
    """DATA with ``data``; raises as ``client.data`` does, and writes the same bytes
    (through the wire form the pipelined path uses, rather than aiosmtplib's own)."""
    protocol, lock = _locked(client)
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != START_INPUT:
                raise SMTPDataError(start.code, start.message)
            response = await _message(protocol, data, timeout)
            if response.code != COMPLETED:
                raise SMTPDataError(response.code, response.message)
            return response
    except (SMTPServerDisconnected, SMTPTimeoutError):
        client.close()
        raise
    except ConnectionError as exc:
        client.close()
        raise SMTPServerDisconnected(str(exc)) from exc

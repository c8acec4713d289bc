"""The SMTP sink, a child process of the orchestrator: ``python -m bench.sink [track]
[blackhole] [nochunking]``. It stands for the provider mailgate delivers to (and, bare, for the
ceiling: no relay on aiosmtpd can beat a server that only answers 250).

It prints ``PORT <port> <loop> <blackhole port>``, answers COUNT and STATS lines on
stdin, and exits on EOF.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from typing import Any, cast

import uvloop

from bench import HOST
from bench.control import say, stdin_reader


class CountingHandler:
    """handle_DATA only says 250; the count is what the e2e scenario reads."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"

    def stats(self) -> dict[str, Any]:
        return {"count": self.count}


# The relay's trace header: "Received: from ... by <host> (mailgate) with ESMTP id <ID>;"
_RECEIVED_ID = re.compile(rb"\(mailgate\) with \S+ id ([^\s;]+);")
_DKIM_HEADER = re.compile(rb"(?im)^DKIM-Signature:")


class TrackingHandler(CountingHandler):
    """Also notes when each queue id arrived, and whether the message was DKIM-signed.

    Used only by the delivering scenarios: the ceiling keeps the bare CountingHandler so
    the regex work here does not lower the ceiling.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0  # at-least-once delivery may resend; worth seeing if it does
        self.without_id = 0
        self.signed = 0
        self.signatures = 0
        self.sample: bytes = b""  # one signed message, verified by the orchestrator

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.note(envelope.original_content or envelope.content)
        return "250 OK"

    def note(self, content: bytes) -> None:
        arrived = time.monotonic()
        self.count += 1
        head = content.split(b"\r\n\r\n", 1)[0]
        m = _RECEIVED_ID.search(head)
        if m is None:
            self.without_id += 1
        elif (qid := m.group(1).decode()) in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[qid] = arrived
        n = len(_DKIM_HEADER.findall(head))
        if n:
            self.signed += 1
            self.signatures += n
            if not self.sample:
                self.sample = content

    def stats(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "arrivals": self.arrivals,
            "duplicates": self.duplicates,
            "without_id": self.without_id,
            "signed": self.signed,
            "signatures": self.signatures,
            "sample": base64.b64encode(self.sample).decode(),
        }


class LeanSink(asyncio.Protocol):
    """The delivering scenarios' sink: the least SMTP a relay needs, on a bare protocol.

    It stands for a provider on another machine, but runs on the relay's two cores; as
    aiosmtpd it took 40% of a core at 500 messages/s, which the relay's processes then
    lacked. This answers every command with one write and hands each message to the
    TrackingHandler. It offers PIPELINING, as providers do, and answers a group in one
    write; and CHUNKING, as Postfix, Gmail and Exchange do (``nochunking``: not). No
    dot-unstuffing (the tracking reads only the header block).
    """

    handler: TrackingHandler
    chunking = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._buffer = bytearray()
        self._in_data = False
        self._chunk = -1  # the size of the BDAT chunk on its way, or -1
        transport.write(b"220 sink.bench.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        while True:
            if self._chunk >= 0:
                if len(buf) < self._chunk:
                    break
                LeanSink.handler.note(bytes(buf[: self._chunk]))  # BDAT LAST only
                del buf[: self._chunk]
                self._chunk = -1
                out.append(b"250 2.0.0 OK\r\n")
                continue
            if self._in_data:
                if buf.startswith(b".\r\n"):  # an empty message
                    end = 0
                else:
                    found = buf.find(b"\r\n.\r\n")
                    if found < 0:
                        break  # the rest is still on its way
                    end = found + 2  # the message keeps its last CRLF
                LeanSink.handler.note(bytes(buf[:end]))
                del buf[: end + 3]
                self._in_data = False
                out.append(b"250 2.0.0 OK\r\n")
                continue
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            verb = bytes(buf[:4]).upper()
            # Only BDAT's argument is read; no other line is copied.
            size = int(bytes(buf[5:eol]).split()[0]) if verb == b"BDAT" else 0
            del buf[: eol + 2]
            if verb == b"EHLO":
                out.append(
                    b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                    + (b"250-CHUNKING\r\n" if LeanSink.chunking else b"")
                    + b"250-SMTPUTF8\r\n250 SIZE\r\n"
                )
            elif verb == b"BDAT" and LeanSink.chunking:
                self._chunk = size
            elif verb == b"DATA":
                self._in_data = True
                out.append(b"354 end with <CRLF>.<CRLF>\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 bye\r\n")
                self._transport.write(b"".join(out))
                self._transport.close()
                return
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                out.append(b"250 2.0.0 OK\r\n")
            else:
                out.append(b"502 5.5.1 not here\r\n")
        if out:
            self._transport.write(b"".join(out))


class Blackhole(asyncio.Protocol):
    """A provider that hangs: accepts the TCP connection and never sends a byte.

    Connections are held (not closed) until the sink exits, as a wedged server would.
    """

    held: set[asyncio.BaseTransport] = set()
    accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Blackhole.accepted += 1
        Blackhole.held.add(transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        Blackhole.held.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        pass  # swallowed: never an answer


async def sink_main(track: bool = False, blackhole: bool = False, chunking: bool = True) -> None:
    """Bare aiosmtpd on 127.0.0.1:0; prints PORT, answers COUNT / STATS on stdin, exits on
    EOF. ``track``: the lean sink instead, noting arrivals per queue id (the delivering
    scenarios); ``blackhole``: also listen on a second port
    that accepts connections and never answers (its port ends the PORT line, else 0);
    ``chunking``: the lean sink offers CHUNKING."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler: CountingHandler
    if track:  # the delivering scenarios: the lean sink (see LeanSink)
        handler = LeanSink.handler = TrackingHandler()
        LeanSink.chunking = chunking
        server = await loop.create_server(LeanSink, host=HOST, port=0, backlog=1024)
    else:
        handler = CountingHandler()
        # A fixed hostname: aiosmtpd would otherwise call getfqdn() for every connection.
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.bench.test", ident="bench-sink"),
            host=HOST,
            port=0,
            backlog=1024,
        )
    port = server.sockets[0].getsockname()[1]
    hole: asyncio.Server | None = None
    if blackhole:
        hole = await loop.create_server(Blackhole, host=HOST, port=0, backlog=1024)
    hole_port = hole.sockets[0].getsockname()[1] if hole else 0
    control = await stdin_reader()
    say(f"PORT {port} {type(loop).__module__}.{type(loop).__qualname__} {hole_port}")
    while line := await control.readline():
        if line.strip() == b"COUNT":
            say(f"COUNT {handler.count}")
        elif line.strip() == b"STATS":
            stats = {**handler.stats(), "blackhole_connections": Blackhole.accepted}
            say("STATS " + json.dumps(stats, separators=(",", ":")))
    server.close()
    if hole is not None:
        hole.close()
    for transport in Blackhole.held:
        transport.close()


if __name__ == "__main__":
    uvloop.install()
    flags = sys.argv[1:]
    asyncio.run(
        sink_main(
            track="track" in flags,
            blackhole="blackhole" in flags,
            chunking="nochunking" not in flags,
        )
    )

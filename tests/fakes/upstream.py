"""A scriptable upstream SMTP server (the relay's provider in tests).

Runs aiosmtpd in its own thread and event loop on 127.0.0.1, port 0. Faults are injected
per transaction: a reply for MAIL, for given recipients, for the end of DATA, a dropped
connection after DATA, or slow replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self):  # type: ignore[no-untyped-def]
        return message_from_bytes(self.data)

    @property
    def queue_id(self) -> str:
        """The relay's queue id, from its Received header."""
        text = self.data.decode("utf-8", "replace")
        marker = " id "
        start = text.index(marker) + len(marker)
        return text[start : text.index(";", start)]


@dataclass
class Faults:
    mail_reply: str | None = None  # e.g. "421 4.7.0 Try again later"
    mail_fail_times: int = 0  # fail this many transactions, then recover (0 = always)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    data_reply: str | None = None  # e.g. "451 4.3.0 Local error"
    data_fail_times: int = 0  # fail this many transactions, then recover (0 = always)
    drop_after_data: int = 0  # transactions in which we drop the connection after DATA
    drop_at_mail: int = 0  # transactions whose MAIL gets no answer: the connection is dropped
    data_delay: float = 0.0  # seconds before answering the end of DATA


class _Handler:
    def __init__(self, server: Upstream) -> None:
        self.server = server

    async def handle_EHLO(
        self, srv: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        offered = [
            ("250-PIPELINING", self.server.pipelining),
            ("250-CHUNKING", self.server.chunking),
        ]
        return [responses[0], *(line for line, on in offered if on), *responses[1:]]

    async def handle_MAIL(
        self, srv: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        f = self.server.faults
        self.server.mail_commands += 1
        if f.drop_at_mail > 0:
            f.drop_at_mail -= 1
            assert srv.transport is not None
            srv.transport.abort()
            return "250 never sent"
        if f.mail_reply:
            reply = f.mail_reply
            if f.mail_fail_times > 0:
                f.mail_fail_times -= 1
                if f.mail_fail_times == 0:
                    f.mail_reply = None
            self.server.rejected_mail += 1
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, srv: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.server.faults.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, srv: SMTP, session: Session, envelope: Envelope) -> str:
        f = self.server.faults
        if f.data_delay:
            await asyncio.sleep(f.data_delay)
        if f.drop_after_data > 0:
            f.drop_after_data -= 1
            # Keep the message (as a real server might have) but never answer.
            self.server.dropped.append(
                Received(envelope.mail_from or "", list(envelope.rcpt_tos), envelope.content or b"")
            )
            assert srv.transport is not None
            srv.transport.abort()
            return "250 never sent"
        if f.data_reply:
            reply = f.data_reply
            if f.data_fail_times > 0:
                f.data_fail_times -= 1
                if f.data_fail_times == 0:
                    f.data_reply = None
            return reply
        assert isinstance(envelope.content, bytes)
        with self.server.lock:
            self.server.received.append(
                Received(envelope.mail_from or "", list(envelope.rcpt_tos), envelope.content)
            )
        return "250 2.0.0 OK queued upstream"


class _ChunkingSMTP(SMTP):
    """aiosmtpd with BDAT (RFC 3030): the chunks of a transaction are put together and
    handed to handle_DATA at ``BDAT <size> LAST``, so every fault applies to them too."""

    def _set_rset_state(self) -> None:
        super()._set_rset_state()
        self.chunks: list[bytes] = []

    async def smtp_BDAT(self, arg: str) -> None:
        parts = arg.split()
        if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or parts[1:] not in ([], ["LAST"]):
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        chunk = await self._reader.readexactly(int(parts[0]))  # read even when refused
        assert self.envelope is not None
        if self.envelope.mail_from is None or not self.envelope.rcpt_tos:
            self.chunks = []
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        self.chunks.append(chunk)
        if not parts[1:]:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        self.event_handler.server.bdat_transactions += 1
        content = b"".join(self.chunks)
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        self.chunks = []
        await self.push(status)


class Upstream:
    """Start with ``with Upstream() as up:``; ``up.port`` is the listening port."""

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        pipelining: bool = True,
        chunking: bool = False,
    ) -> None:
        """``pipelining``: offer PIPELINING (as providers do), so the relay sends MAIL,
        RCPT and DATA in one go; aiosmtpd answers them in order either way. ``chunking``:
        offer CHUNKING too, and take messages in BDAT chunks."""
        self.pipelining = pipelining
        self.chunking = chunking
        self.bdat_transactions = 0
        self.faults = Faults()
        self.received: list[Received] = []
        self.dropped: list[Received] = []
        self.mail_commands = 0
        self.rejected_mail = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.host = host
        self.port = port
        self._tls = tls_context
        self._auth = auth
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    def _authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self._auth is not None
            and (data.login.decode(), data.password.decode()) == self._auth
        )
        return AuthResult(success=ok, handled=False)

    def _factory(self) -> SMTP:
        self.connections += 1
        proto = (_ChunkingSMTP if self.chunking else SMTP)(
            _Handler(self),
            hostname="upstream.test",
            tls_context=self._tls,
            enable_SMTPUTF8=True,
            authenticator=self._authenticator if self._auth else None,
            auth_required=self._auth is not None,
            auth_require_tls=False,
        )
        self._protocols.append(proto)
        return proto

    def __enter__(self) -> Upstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                loop.create_server(self._factory, self.host, self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="upstream")
        self._thread.start()
        ready.wait(10)
        return self

    def stop_listening(self) -> None:
        """Close the listening socket (connections are refused) but keep the port number."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._stop_accepting(), self._loop).result(10)

    async def _stop_accepting(self) -> None:
        """Close the listening socket once the connections accepted so far have their
        protocol: asyncio (3.11) drops a connection accepted just before ``Server.close()``
        without closing it, and its client would wait for a greeting until its timeout."""
        assert self._loop is not None and self._server is not None
        for sock in self._server.sockets:
            self._loop.remove_reader(sock.fileno())
        await asyncio.sleep(0.05)
        self._server.close()

    def start_listening(self) -> None:
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self._relisten(), self._loop)
        fut.result(5)

    async def _relisten(self) -> None:
        assert self._loop is not None
        self._server = await self._loop.create_server(self._factory, self.host, self.port)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _shutdown(self) -> None:
        """Close every client connection, so no task is left pending."""
        if self._server is not None and self._server.is_serving():
            await self._stop_accepting()
        for proto in self._protocols:
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0.05)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages were received; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"upstream received {len(self.received)} messages, expected {count}")

    def by_queue_id(self) -> Counter[str]:
        with self.lock:
            return Counter(r.queue_id for r in self.received)

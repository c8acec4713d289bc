"""SMTP submission: thin aiosmtpd hooks in front of accept().

Where aiosmtpd's own behaviour is not what a relay needs we override it here, and only
here: DATA reading (bare LF/CR normalised to CRLF, 998-octet lines, size limit, replies
with enhanced status codes), the idle-timeout reply, AUTH before TLS allowed on loopback
and implicit TLS, and exceptions that never leak their text to the client.

Bare LF or CR in DATA is normalised to CRLF (as Postfix's ``smtpd_forbid_bare_newline =
normalize``); end of data is recognised only as <CRLF>.<CRLF>, so SMTP smuggling with
<LF>.<LF> or <LF>.<CRLF> cannot split a message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Container, Iterable
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailgate import policy, replies
from mailgate.accept import Acceptor
from mailgate.config import Settings, SmtpSettings
from mailgate.delivery.bounce_intake import NOT_A_BOUNCE_ADDRESS, BounceIntake
from mailgate.events.tracking import Tracking
from mailgate.exceptions import (
    InsufficientStorage,
    ListenError,
    PolicyRefused,
    StoreUnavailable,
)
from mailgate.inflight import InflightBudget, Reservation
from mailgate.ingress.smtp_auth import AuthHooks
from mailgate.logs import fields, recipient_domain
from mailgate.models import Credential, SmtpReply, Submission
from mailgate.store import Store
from mailgate.units import parse_hostport

log = logging.getLogger(__name__)

UNSUBSCRIBED = SmtpReply(250, "2.0.0", "Unsubscribed")
# Unsubscribe addresses and other recipients are taken in separate transactions; 452 asks
# the client to send the rest again (RFC 5321 3.3).
ONE_KIND_AT_A_TIME = SmtpReply(452, "4.5.3", "Send to this recipient in another transaction")

MAX_LINE = 998
NULL_SENDER = "<>"  # how aiosmtpd hands over MAIL FROM:<>
_CALL_LIMITS = {
    "*": 2**62,
    "AUTH": 10,
    "NOOP": 1000,
    "HELP": 10,
    "VRFY": 10,
    "EXPN": 10,
    "STARTTLS": 2,
    "EHLO": 100,
    "HELO": 100,
}

# A plain <local@domain> of dot-atoms (what nearly every client sends), then the end or
# spaces before the parameters (not a comment): see RelaySMTP._getaddr.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_ANGLE_ADDR = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>(?:[ \t]+(?=[\x21-\x27\x29-\x7e])|\Z)")


class Connections:
    """The open SMTP connections, counted in all and per client address, so that one
    client (or a flood of them) cannot take every socket and all the memory."""

    def __init__(self, smtp: SmtpSettings) -> None:
        self.open: set[RelaySMTP] = set()
        self._per_client: Counter[str] = Counter()
        self.reconfigure(smtp)

    def reconfigure(self, smtp: SmtpSettings) -> None:
        """New limits (a reload) for the connections from now on; none is closed."""
        self._max = smtp.max_connections
        self._max_per_client = smtp.max_connections_per_client
        self._networks = smtp.networks()

    def add(self, conn: RelaySMTP) -> None:
        self.open.add(conn)
        self._per_client[conn.peer_address] += 1

    def discard(self, conn: RelaySMTP) -> None:
        if conn not in self.open:
            return
        self.open.remove(conn)
        self._per_client[conn.peer_address] -= 1
        if self._per_client[conn.peer_address] <= 0:
            del self._per_client[conn.peer_address]

    def refusal(self, conn: RelaySMTP) -> SmtpReply | None:
        """The 421 for ``conn`` (already counted) if it is one too many, else None."""
        if len(self.open) > self._max:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_client[conn.peer_address] > self._max_per_client and not policy.is_trusted(
            conn.peer_address, self._networks
        ):
            return replies.TOO_MANY_FROM_CLIENT
        return None


class RelayEnvelope(Envelope):
    """An envelope, and whether it carries reports (bounces, complaints) to the intake or
    unsubscribe requests.

    ``refusal``: why MAIL would have been refused to a submission; with report intake on,
    that answer waits for RCPT (as Postfix's smtpd_delay_reject does), because a feedback
    loop sends from its own address, with no AUTH, to our bounce or complaints address.
    """

    def __init__(self) -> None:
        super().__init__()
        self.intake = False
        self.refusal: str | None = None
        # RCPT took a List-Unsubscribe mailto address: the transaction is an unsubscribe.
        self.unsubscribe = False


class RelaySMTP(SMTP):
    """One client connection."""

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        settings: Settings,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool,
        connections: Connections,
    ) -> None:
        smtp = settings.smtp
        super().__init__(
            handler,
            data_size_limit=None,  # we advertise SIZE and enforce it ourselves (552 5.3.4)
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.server.hostname,
            ident="mailgate ESMTP",
            tls_context=None if implicit_tls else tls_context,
            timeout=smtp.idle_timeout,
            auth_require_tls=True,
            # Per connection, never reset: only commands that do no work are capped, so a
            # pooled client connection can send any number of messages.
            command_call_limit=_CALL_LIMITS,
        )
        self._relay = handler
        self.implicit_tls = implicit_tls
        self.plaintext_loopback = smtp.auth_plaintext_loopback
        self.auth_failures = 0
        self.busy = False
        self.peer_address = ""
        # What the peer address alone allows (SmtpHandler._credential), found once.
        self.network_credential: Credential | None = None
        self.network_checked = False
        self._connections = connections
        self._greeted = False
        self._verbatim = False  # inside EHLO/HELO, whose 250 carries no enhanced code
        # The transaction's share of [server] max_inflight_bytes; released with its envelope.
        budget = handler.inflight
        self.held: Reservation | None = budget.reservation("smtp") if budget else None

    @property
    def max_message_size(self) -> int:
        """The limit of the settings now running: a reload applies to open sessions too."""
        return self._relay.settings.smtp.max_message_size

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            self.peer_address = str(peer[0]) if peer else ""
            # AUTH in clear text only where nothing can listen in: loopback, or inside TLS.
            if self.implicit_tls or (
                self.plaintext_loopback and policy.is_loopback(self.peer_address)
            ):
                self._auth_require_tls = False
            self._connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        if self.held is not None:
            self.held.release()
        super().connection_lost(error)

    def _create_envelope(self) -> RelayEnvelope:
        # A new transaction (after DATA, RSET, EHLO): the last one's bytes are gone.
        held = getattr(self, "held", None)
        if held is not None:
            held.release()
        return RelayEnvelope()

    def hold(self, size: int) -> bool:
        """Reserve ``size`` bytes of the in-flight budget for this transaction."""
        return self.held is None or self.held.ensure(size)

    @property
    def is_tls(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def close_connection(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        refusal = self._connections.refusal(self)
        if refusal is None:
            await super()._handle_client()
            return
        log.warning("refused a connection from %s: %s", self.peer_address, refusal.text)
        await self.push(refusal.line())  # instead of the greeting
        self.close_connection()

    async def push(self, status: AnyStr) -> None:
        """Every reply but the greeting and EHLO/HELO's with an enhanced status code
        (aiosmtpd's own protocol errors have none; see replies.with_enhanced_code)."""
        verbatim = self._verbatim and status[:3] == "250"
        if isinstance(status, str) and self._greeted and not verbatim:
            status = replies.with_enhanced_code(status)
        self._greeted = True
        await super().push(status)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self._with_plain_250(super().smtp_HELO(hostname))

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._with_plain_250(super().smtp_EHLO(hostname))

    async def _with_plain_250(self, answer: Awaitable[None]) -> None:
        self._verbatim = True
        try:
            await answer
        finally:
            self._verbatim = False

    def _getparams(self, params: Iterable[str]) -> dict[str, str | bool] | None:
        """aiosmtpd's MAIL/RCPT parameter parser, accepting ``AUTH=`` (RFC 4954 section 5:
        a server that offers AUTH must accept it, and may ignore it, as we do: the
        session's own AUTH says who sends). Exim sends ``AUTH=<>`` once authenticated;
        aiosmtpd refused that MAIL with 555."""
        parsed: dict[str, str | bool] | None = super()._getparams(params)
        if parsed is not None:
            parsed.pop("AUTH", None)
        return parsed

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT address parser, with a fast path for ``<local@domain>``.

        aiosmtpd builds an RFC 5322 token tree (and defines a class) per call, about 40 us
        for each MAIL and RCPT. For dot-atom@dot-atom in angle brackets its answer is the
        text between the brackets and what follows the spaces, so that is returned directly;
        anything else (quoted local parts, comments, address literals, encoded words,
        non-ASCII, no brackets) still goes through aiosmtpd's parser.
        """
        match = _PLAIN_ANGLE_ADDR.match(arg)
        if match is None or "=?" in match[1]:
            return super()._getaddr(arg)
        address = match[1]
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, arg[match.end() :]

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self._writer.write(f"{replies.IDLE_TIMEOUT.line()}\r\n".encode())
            except Exception:
                log.debug("could not send the idle-timeout reply", exc_info=True)
        super()._timeout_cb()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            error, content = await self._read_data()
            if error is not None:
                await self.push(error.line())
                return
            self.envelope.content = content
            self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            await self.push(status)
        finally:
            self.busy = False
            self._set_post_data_state()

    async def _read_data(self) -> tuple[Any, bytes]:
        """Read up to <CRLF>.<CRLF>; return (refusal or None, normalised content).

        A line that needs no work (CRLF-terminated, no bare CR, no dot to remove, not too
        long: nearly all of them) is kept as received, and all are joined once at the end.
        """
        reader = self._reader
        lines: list[bytes] = []  # each ends with CRLF
        size = 0
        limit = self.max_message_size
        # Bytes held in the budget: beyond them DATA asks for more (452 4.3.1 if refused).
        allowed = self.held.amount if self.held is not None else limit
        error = None
        after_crlf = True
        long_line = False  # inside a line longer than the stream limit
        tail_cr = False  # the discarded part of that line ended with CR
        while True:
            try:
                chunk = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                # A line longer than the limit: drop it (and the message), keep reading.
                discarded = await reader.read(exc.consumed)
                tail_cr = discarded.endswith(b"\r")
                long_line = True
                error = error or replies.LINE_TOO_LONG
                lines.clear()
                continue
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError("connection closed during DATA") from exc
            if long_line:
                long_line = False
                after_crlf = chunk.endswith(b"\r\n") or (chunk == b"\n" and tail_cr)
                continue
            if after_crlf and chunk == b".\r\n":
                break
            n = len(chunk)
            # The usual line: no dot, not too long, and its only CR is the one before the LF.
            if (
                error is None
                and 2 <= n <= MAX_LINE + 2
                and chunk[0] != 0x2E
                and chunk.find(b"\r") == n - 2
            ):
                after_crlf = True
                size += n
                if size > limit:
                    error = replies.MESSAGE_TOO_BIG
                    lines.clear()
                elif size > allowed and not self.hold(size):
                    error = replies.INFLIGHT_FULL
                    lines.clear()
                else:
                    lines.append(chunk)
                    allowed = self.held.amount if self.held is not None else limit
                continue
            if chunk.endswith(b"\r\n"):
                body = chunk[:-2]
                after_crlf = True
            else:
                body = chunk[:-1]
                after_crlf = False
            if error is not None:
                continue
            size += len(body) + 2
            if size > limit:
                error = replies.MESSAGE_TOO_BIG
                lines.clear()
                continue
            if size > allowed:
                if not self.hold(size):
                    error = replies.INFLIGHT_FULL
                    lines.clear()
                    continue
                allowed = self.held.amount if self.held is not None else limit
            if body[:1] == b".":
                body = body[1:]
            for part in body.split(b"\r"):
                if len(part) > MAX_LINE:
                    error = replies.LINE_TOO_LONG
                    lines.clear()
                    break
                lines.append(part + b"\r\n")
        if error is not None:
            return error, b""
        return None, b"".join(lines)


class SmtpHandler(AuthHooks):
    """aiosmtpd hooks: policy answers at MAIL and RCPT, accept() at end of DATA."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        acceptor: Acceptor,
        suppressed: Container[str] = frozenset(),
        bounces: BounceIntake | None = None,
        *,
        unsubscribes: Tracking | None = None,
        inflight: InflightBudget | None = None,
    ) -> None:
        self.inflight = inflight  # [server] max_inflight_bytes; None: no cap
        self.unsubscribes = unsubscribes  # List-Unsubscribe mailto addresses, with public_url
        self.store = store
        self.acceptor = acceptor
        self._suppressed = suppressed
        self.bounces = bounces
        self.reconfigure(settings)

    def reconfigure(self, settings: Settings) -> None:
        """A reload: sender domains, trusted networks and limits apply to every session from
        its next command on (a client trusted by address is judged once per connection)."""
        self.settings = settings
        self.login_failure_delay = settings.smtp.auth_failure_delay
        self._networks = settings.smtp.networks()
        self._domains = settings.domain_names()

    def _credential(self, server: RelaySMTP, session: Session) -> Credential | None:
        data = session.auth_data
        if session.authenticated and isinstance(data, Credential):
            return data
        if not server.network_checked:  # the peer address does not change: decide once
            server.network_credential = self._network_credential(server.peer_address)
            server.network_checked = True
        return server.network_credential

    def _network_credential(self, address: str) -> Credential | None:
        """What the client address alone allows, without AUTH."""
        if policy.is_trusted(address, self._networks):
            return Credential(kind="network", id=address, name=address)
        if not self.settings.smtp.require_auth:
            return Credential(kind="network", id=address, name="unauthenticated")
        return None

    async def handle_EHLO(
        self,
        server: RelaySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        extra = [
            f"250-SIZE {server.max_message_size}",
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
        ]
        return [responses[0], *extra, *responses[1:]]

    async def handle_MAIL(
        self,
        server: RelaySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        declared = 0
        for option in mail_options:
            name, _, value = option.partition("=")
            if name == "SIZE" and value.isdigit():
                declared = int(value)
                if declared > server.max_message_size:
                    return replies.MESSAGE_TOO_BIG.line()
        if declared and not server.hold(declared):
            return replies.INFLIGHT_FULL.line()
        intake = self.bounces is not None and self.bounces.enabled
        if address == NULL_SENDER and intake:
            # A bounce coming back from the internet: no AUTH; RCPT must be a VERP address
            # (or the complaints address).
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return replies.MAIL_OK.line()
        credential = self._credential(server, session)
        refusal = (
            replies.AUTH_REQUIRED
            if credential is None
            else policy.check_sender(address, credential, self._domains)
        )
        # Feedback loops (complaints) and mailbox providers sending a List-Unsubscribe mail
        # come with no AUTH, from their own address: with either intake on, the refusal
        # waits for RCPT, which takes only report and unsubscribe addresses then.
        intake = intake or self.unsubscribes is not None
        if refusal is not None:
            if not intake or not isinstance(envelope, RelayEnvelope):
                if server.held is not None:
                    server.held.release()
                return refusal.line()
            envelope.refusal = refusal.line()  # unless RCPT names a report address
        elif self.acceptor.storage_low("smtp"):
            if server.held is not None:
                server.held.release()
            return replies.INSUFFICIENT_STORAGE.line()  # before the client sends the data
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.MAIL_OK.line()

    async def handle_RCPT(
        self,
        server: RelaySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return replies.TOO_MANY_RECIPIENTS.line()
        unsubscribe = (
            self.unsubscribes is not None and self.unsubscribes.mail_token(address) is not None
        )
        # An unsubscribe and other recipients do not share a transaction.
        unsubscribing = isinstance(envelope, RelayEnvelope) and envelope.unsubscribe is True
        if unsubscribe:
            if envelope.rcpt_tos and not unsubscribing:
                return ONE_KIND_AT_A_TIME.line()
            if isinstance(envelope, RelayEnvelope):
                envelope.unsubscribe = True
            envelope.rcpt_tos.append(address)
            return replies.RCPT_OK.line()
        if unsubscribing:
            return ONE_KIND_AT_A_TIME.line()
        reports = self.bounces is not None and self.bounces.takes(address)
        as_intake = isinstance(envelope, RelayEnvelope) and (
            envelope.intake or envelope.refusal is not None or not envelope.rcpt_tos
        )
        if envelope.mail_from == NULL_SENDER or (reports and as_intake):
            if not reports:
                return NOT_A_BOUNCE_ADDRESS.line()
            if isinstance(envelope, RelayEnvelope):
                envelope.intake = True
            envelope.rcpt_tos.append(address)
            return replies.RCPT_OK.line()
        if isinstance(envelope, RelayEnvelope):
            if envelope.intake:  # reports and mail do not share a transaction
                return NOT_A_BOUNCE_ADDRESS.line()
            if envelope.refusal is not None:
                return envelope.refusal
        refusal = policy.check_recipient(address)
        if refusal is not None:
            return refusal.line()
        if address in self._suppressed:
            return replies.RCPT_SUPPRESSED.line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RCPT_OK.line()

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        if isinstance(envelope, RelayEnvelope) and envelope.unsubscribe and self.unsubscribes:
            try:
                done = await self.unsubscribes.unsubscribe_by_mail(envelope.rcpt_tos)
            except StoreUnavailable as exc:
                log.error("could not record an unsubscribe from %s: %s", server.peer_address, exc)
                return replies.STORE_FAILED.line()
            log.info("unsubscribe mail from %s: %d address(es)", server.peer_address, done)
            return UNSUBSCRIBED.line()
        intake = isinstance(envelope, RelayEnvelope) and envelope.intake
        if (intake or envelope.mail_from == NULL_SENDER) and self.bounces is not None:
            try:
                return (await self.bounces.process(envelope.rcpt_tos, content)).line()
            except StoreUnavailable as exc:
                log.error("could not record a bounce from %s: %s", server.peer_address, exc)
                return replies.STORE_FAILED.line()
        credential = self._credential(server, session)
        if credential is None or not envelope.mail_from:
            return replies.AUTH_REQUIRED.line()
        protocol = "ESMTP"
        if server.is_tls:
            protocol += "S"
        if session.authenticated:
            protocol += "A"
        sub = Submission(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            data=content,
            source="smtp",
            credential=credential,
            client_address=server.peer_address,
            client_helo=session.host_name or "",
            protocol=protocol,
        )
        try:
            accepted = await self.acceptor.accept(sub)
        except PolicyRefused as exc:
            log.info("refused message from %s: %s", server.peer_address, exc.reply)
            return exc.reply.line()
        except InsufficientStorage as exc:
            log.warning("refused message from %s: %s", server.peer_address, exc)
            return replies.INSUFFICIENT_STORAGE.line()
        except StoreUnavailable as exc:
            log.error("could not queue message from %s: %s", server.peer_address, exc)
            return replies.STORE_FAILED.line()
        log.info(
            "queued %s from=<%s> rcpts=%d size=%d client=%s",
            accepted.id,
            sub.sender,
            len(sub.recipients),
            len(sub.data),
            server.peer_address,
            extra=fields(
                event="queued",
                message_id=accepted.id,
                source="smtp",
                recipient_domains=sorted({recipient_domain(r) for r in accepted.recipients}),
                recipients=len(accepted.recipients),
                size=len(sub.data),
                client=server.peer_address,
            ),
        )
        return replies.queued(accepted.id).line()

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error, exc_info=error)
        return replies.INTERNAL_ERROR.line()


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SmtpListeners:
    """The listening sockets of ``[smtp] listen`` and ``implicit_tls_listen``."""

    def __init__(self, settings: Settings, handler: SmtpHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._servers: list[asyncio.Server] = []
        smtp = settings.smtp
        self.connections = Connections(smtp)
        self._tls = (
            server_tls_context(str(smtp.tls_cert), str(smtp.tls_key))
            if smtp.tls_cert and smtp.tls_key
            else None
        )

    def reconfigure(self, settings: Settings) -> None:
        """A reload: the handler's settings (every session), connection limits, and the
        settings new connections start with (idle timeout, plain-text AUTH on loopback).
        Listen addresses and TLS need a restart."""
        self._settings = settings
        self.connections.reconfigure(settings.smtp)
        self._handler.reconfigure(settings)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        smtp = self._settings.smtp
        specs = [(a, False) for a in smtp.listen] + [(a, True) for a in smtp.implicit_tls_listen]
        for address, implicit in specs:
            host, port = parse_hostport(address)

            def factory(implicit: bool = implicit) -> RelaySMTP:
                return RelaySMTP(
                    self._handler,
                    settings=self._settings,
                    tls_context=self._tls,
                    implicit_tls=implicit,
                    connections=self.connections,
                )

            try:
                server = await loop.create_server(
                    factory,
                    host=host,
                    port=port,
                    ssl=self._tls if implicit else None,
                    reuse_address=True,
                )
            except OSError as exc:
                raise ListenError.of("SMTP", address, exc) from exc
            self._servers.append(server)
            log.info(
                "SMTP listening on %s%s",
                self._format(server),
                " (implicit TLS)" if implicit else "",
            )

    @staticmethod
    def _format(server: asyncio.Server) -> str:
        return ", ".join(
            f"[{s[0]}]:{s[1]}" if ":" in s[0] else f"{s[0]}:{s[1]}"
            for s in (sock.getsockname() for sock in server.sockets)
        )

    def addresses(self) -> list[tuple[str, int, bool]]:
        """(host, port, implicit_tls) of every bound socket (port 0 resolved)."""
        out: list[tuple[str, int, bool]] = []
        implicit_flags: Iterable[bool] = [False] * len(self._settings.smtp.listen) + [True] * len(
            self._settings.smtp.implicit_tls_listen
        )
        for server, implicit in zip(self._servers, implicit_flags, strict=False):
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1], implicit))
        return out

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening; let messages in DATA finish, then say 421 to everyone left."""
        for server in self._servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections.open) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections.open):
            if conn.transport is not None and not conn.transport.is_closing():
                try:
                    conn._writer.write(f"{replies.SHUTTING_DOWN.line()}\r\n".encode())
                except Exception:
                    log.debug("could not send 421 on shutdown", exc_info=True)
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

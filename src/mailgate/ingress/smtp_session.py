"""One SMTP client connection: aiosmtpd's protocol, with what a relay needs instead.

Where aiosmtpd's own behaviour is not what a relay needs we override it here (and in the
hooks of smtp_handler.py), and only there: DATA reading (bare LF/CR normalised to CRLF,
998-octet lines, size limit, replies with enhanced status codes), the idle-timeout reply,
AUTH before TLS allowed on loopback and implicit TLS (and its mechanism names in any case),
a client that closes its sending side (its commands are still answered), and exceptions
that never leak their text to the client (SmtpHandler.handle_exception).

Bare LF or CR in DATA is normalised to CRLF (as Postfix's ``smtpd_forbid_bare_newline =
normalize``); end of data is recognised only as <CRLF>.<CRLF>, so SMTP smuggling with
<LF>.<LF> or <LF>.<CRLF> cannot split a message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, TLSSetupException, syntax

from mailgate import policy, replies
from mailgate.address_syntax import DOT_ATOM
from mailgate.config import Settings
from mailgate.inflight import Reservation
from mailgate.ingress.smtp_data import DataParser
from mailgate.models import Credential

if TYPE_CHECKING:
    from mailgate.ingress.smtp_handler import SmtpHandler
    from mailgate.ingress.smtp_listeners import Connections

# The SMTP ingress logs under the name it always had (ingress/smtp.py before the split).
log = logging.getLogger("mailgate.ingress.smtp")

# StreamReader.read(n) hands over up to n buffered bytes: this takes all of them, and flow
# control (the reader pauses its transport past twice its limit) bounds how many there are.
_ALL = 1 << 62
# aiosmtpd's refusal of an address its parser cannot read, at MAIL and at RCPT.
_MALFORMED = "553 5.1.3 Error: malformed address"
# aiosmtpd's last answer to a client sending unknown commands, before it closes: a reply
# that closes the connection is a 421 (RFC 5321 3.8), which a client may retry later.
_BOGUS_CLOSE = "502 5.5.1 Too many unrecognized commands, goodbye."
_BOGUS_CLOSE_421 = "421 4.7.0 Too many unrecognized commands, closing connection"
# A timer may fire up to a millisecond before its time (uvloop counts in milliseconds).
_TIMER_SLACK = 0.001
# Per connection: aiosmtpd never resets them. NOOP is not capped (as RSET is not): pooled
# clients (JavaMail, Symfony) send one before each reuse of a connection, and a cap cut
# them off after about a thousand messages.
_CALL_LIMITS = {
    "*": 2**62,
    "AUTH": 10,
    "HELP": 10,
    "VRFY": 10,
    "EXPN": 10,
    "STARTTLS": 2,
    "EHLO": 100,
    "HELO": 100,
}

# Control characters, which no reply text may hold (RFC 5321 4.2).
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\x80-\U0010ffff]|[\x7f-\x9f]")
# A plain <local@domain> of dot-atoms (what nearly every client sends), then the end or
# spaces before the parameters (not a comment): see RelaySMTP._getaddr.
_PLAIN_ANGLE_ADDR = re.compile(rf"<({DOT_ATOM}@{DOT_ATOM})>(?:[ \t]+(?=[\x21-\x27\x29-\x7e])|\Z)")
# Any <...> (quoted strings may hold < and >), closed, then the end or a space: aiosmtpd's
# parser took "<a@example.com" (no ">") and "<a@example.com>SIZE=10" (no space).
_CLOSED_ANGLE = re.compile(r'<(?:"(?:[^"\\]|\\.)*"|[^<>"])*>(?:[ \t]|\Z)')


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
        # The recipients taken so far, lowercased: a repeated RCPT is answered 250 and
        # queued once (To, Cc and Bcc may name one address twice).
        self.recipient_keys: set[str] = set()


class RelaySMTP(SMTP):
    """One client connection."""

    # AUTH LOGIN's prompts as Postfix and most servers word them (aiosmtpd's end in a NUL).
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

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
        # aiosmtpd's command length limits are one dict on its class, cleared by every new
        # connection and raised by every EHLO: a session's MAIL limit moved with others'.
        self.command_size_limits = defaultdict(lambda: SMTP.command_size_limit)
        self._idle_deadline = 0.0  # loop time of the idle timeout (_reset_timeout)
        self.implicit_tls = implicit_tls
        self.plaintext_loopback = smtp.auth_plaintext_loopback
        self.auth_failures = 0
        self.busy = False
        self.peer_address = ""
        # What the peer address alone allows (SmtpHandler._credential), found once.
        self.network_credential: Credential | None = None
        self.network_checked = False
        self._connections = connections
        # The client address while an implicit-TLS handshake counts this connection
        # (smtp_listeners.Connections.begin_handshake); None once that count ended.
        self.handshake_from: str | None = None
        self._greeted = False
        self._verbatim = False  # inside EHLO/HELO, whose 250 carries no enhanced code
        self._input_ended = False  # the client closed its sending side (eof_received)
        self._in_mail = False  # inside MAIL (smtp_MAIL)
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

    def eof_received(self) -> bool | None:
        """The client closed its sending side (``nc -N``, a script that writes its whole
        session, then shuts its socket down): what it sent before still gets its replies,
        as Postfix answers it, and the session ends once they are out.

        aiosmtpd cancelled the session at once: a message whose final dot came with QUIT
        was queued and its 250 never sent, so the client would send it again; commands
        pipelined after EHLO went unanswered. Over TLS the end of input is a close.
        """
        if self.is_tls or self._handler_coroutine is None:
            return super().eof_received()
        self._input_ended = True
        return asyncio.StreamReaderProtocol.eof_received(self)  # the reader ends after them

    async def handle_exception(self, error: Exception) -> str:
        if self._input_ended and isinstance(error, asyncio.IncompleteReadError):
            # Every complete command the client sent before its end has been answered.
            self.close_connection()
            return ""  # push() sends nothing
        if isinstance(error, TLSSetupException):
            # A client that does not trust the certificate, or a scanner: not our error,
            # and nothing to answer (aiosmtpd closes the connection).
            log.info("STARTTLS from %s failed: %r", self.peer_address, error.__cause__)
            return ""
        return await super().handle_exception(error)

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
        if not status:  # handle_exception's end of a session whose client closed its side
            await asyncio.sleep(0)  # connection_lost() runs, and aiosmtpd's loop ends
            return
        if self._in_mail and status == _MALFORMED:  # aiosmtpd's, for MAIL and RCPT alike
            status = replies.SENDER_SYNTAX.line()
        elif status == _BOGUS_CLOSE:
            status = _BOGUS_CLOSE_421
        if isinstance(status, str) and not status.isprintable():
            # aiosmtpd echoes a command it does not know: its CR, NUL or other control
            # bytes would go back as they came (RFC 5321 4.2: text is printable).
            status = _UNPRINTABLE.sub("?", status)
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
        self.command_size_limits.clear()  # aiosmtpd's EHLO adds to them again
        await self._with_plain_250(super().smtp_EHLO(hostname))
        if self.session is not None and self.session.extended_smtp:
            # SIZE (we advertise it: aiosmtpd does not know) and AUTH= (RFC 1870, 4954)
            self.command_size_limits["MAIL"] += 26 + 500

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
            size = parsed.get("SIZE")
            if isinstance(size, str) and not (size.isascii() and size.isdigit()):
                return None  # 501: RFC 1870's size-value is ASCII digits (not "²" or "١٢")
        return parsed

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT address parser, with a fast path for ``<local@domain>``, and
        without its decoding of encoded words.

        aiosmtpd builds an RFC 5322 token tree (and defines a class) per call, about 40 us
        for each MAIL and RCPT. For dot-atom@dot-atom in angle brackets its answer is the
        text between the brackets and what follows the spaces, so that is returned directly;
        anything else (quoted local parts, comments, address literals, non-ASCII, no
        brackets) still goes through aiosmtpd's parser.
        """
        match = _PLAIN_ANGLE_ADDR.match(arg)
        if match is None:
            if "=?" in arg:
                # aiosmtpd's parser decodes an encoded word (RFC 2047) in an address, which
                # none may hold (its section 5): <=?utf-8?q?x?=@example.net> was taken as
                # x@example.net. A plain address keeps such text as it is (below).
                return None, None
            if arg.startswith("<") and not _CLOSED_ANGLE.match(arg):
                return None, None
            return super()._getaddr(arg)
        address = match[1]
        if "=?" in address.rpartition("@")[2]:
            return None, None  # a domain that holds one is no host name
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, arg[match.end() :]

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, without a new timer for every command: each command
        moves the deadline, and a timer set for an earlier deadline sets itself again when
        it fires (a cancel and a call_later per command were 2% of the relay's SMTP work)."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        deadline = self._idle_deadline
        if self.loop.time() + _TIMER_SLACK < deadline:  # a command came since it was set
            self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self._writer.write(f"{replies.IDLE_TIMEOUT.line()}\r\n".encode())
            except Exception:
                log.debug("could not send the idle-timeout reply", exc_info=True)
        super()._timeout_cb()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's, with a sender it cannot parse refused as a sender (553 5.1.7, as
        the relay's own checks refuse one), not as a recipient (5.1.3)."""
        if await self._refused_while_stopping():
            return
        self._in_mail = True
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._in_mail = False

    async def _refused_while_stopping(self) -> bool:
        """The relay is stopping: 421 and the end of the session instead of a transaction
        (smtp_listeners.SmtpListeners.stop lets those in DATA finish)."""
        if not self._connections.stopping:
            return False
        await self.push(replies.SHUTTING_DOWN.line())
        if self.transport is not None:
            self.transport.close()
        return True

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """Not again inside TLS (RFC 3207 4): aiosmtpd answered 220 and began a second
        handshake inside the first, and the connection died."""
        if self.is_tls:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        """Mechanism names in any case, as Postfix takes them (``auth plain ...``);
        aiosmtpd answered 504 to any but upper case. Not inside a mail transaction (RFC
        4954 4: 503). A client's answer to a challenge longer than a line may be is a 500;
        it was an internal error (451) with a traceback, as was AUTH with no argument."""
        if self.envelope is not None and self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: AUTH not allowed in a mail transaction")
            return
        if self.session is not None and self.session.host_name and not self.session.extended_smtp:
            # After HELO: aiosmtpd said the command was unknown (500); it is out of sequence.
            await self.push("503 5.5.1 Error: send EHLO first")
            return
        if arg:
            mechanism, space, rest = arg.partition(" ")
            arg = mechanism.upper() + space + rest
        try:
            await super().smtp_AUTH(arg)  # type: ignore[arg-type]  # None: its 501
        except ValueError as exc:  # StreamReader.readline: over the reader's limit
            if "limit" not in str(exc):
                raise
            await self.push("500 5.5.6 Error: authentication line too long")

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
        if await self._refused_while_stopping():
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

        All that has arrived is taken at once and parsed in runs of lines (smtp_data.py);
        what came after the end (pipelined commands) goes back to the reader, whose buffer
        that read emptied, so the commands are read next, in order.
        """
        reader = self._reader
        parser = DataParser(self.max_message_size, self.hold)
        while True:
            data = await reader.read(_ALL)
            if not data:
                raise ConnectionResetError("connection closed during DATA")
            # The idle timeout runs from the last data received (RFC 5321 4.5.3.2.5), not
            # from the DATA command: a big message on a slow link was cut off.
            self._reset_timeout()
            end = parser.feed(data)
            if end >= 0:
                break
        if end < len(data):
            if reader.at_eof():  # the client closed its side after them (eof_received)
                reader._buffer.extend(data[end:])
            else:
                reader.feed_data(data[end:])
        if parser.error is not None:
            return parser.error, b""
        return None, parser.content()

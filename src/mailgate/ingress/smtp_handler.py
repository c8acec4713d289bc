"""The aiosmtpd handler hooks: policy answers at MAIL and RCPT, accept() at end of DATA.

A transaction is one of three kinds, told apart at RCPT: a submission (AUTH or a trusted
network, through accept()), reports to the bounce or complaints address (taken with no
AUTH, to the intake), or an unsubscribe by mail to a List-Unsubscribe address.
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.smtp import Envelope, Session

from mailgate import policy, replies
from mailgate.accept import Acceptor
from mailgate.config import Settings
from mailgate.delivery.bounce_intake import NOT_A_BOUNCE_ADDRESS, BounceIntake
from mailgate.events.tracking import Tracking
from mailgate.exceptions import InsufficientStorage, PolicyRefused, StoreUnavailable
from mailgate.inflight import InflightBudget
from mailgate.ingress.smtp_auth import AuthHooks
from mailgate.ingress.smtp_session import RelayEnvelope, RelaySMTP
from mailgate.logs import fields, recipient_domain
from mailgate.models import Credential, SmtpReply, Submission
from mailgate.store import Store

# The SMTP ingress logs under the name it always had (ingress/smtp.py before the split).
log = logging.getLogger("mailgate.ingress.smtp")

UNSUBSCRIBED = SmtpReply(250, "2.0.0", "Unsubscribed")
# Unsubscribe addresses and other recipients are taken in separate transactions; 452 asks
# the client to send the rest again (RFC 5321 3.3).
ONE_KIND_AT_A_TIME = SmtpReply(452, "4.5.3", "Send to this recipient in another transaction")

NULL_SENDER = "<>"  # how aiosmtpd hands over MAIL FROM:<>


class SmtpHandler(AuthHooks):
    """aiosmtpd hooks: policy answers at MAIL and RCPT, accept() at end of DATA."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        acceptor: Acceptor,
        bounces: BounceIntake | None = None,
        *,
        unsubscribes: Tracking | None = None,
        inflight: InflightBudget | None = None,
    ) -> None:
        self.inflight = inflight  # [server] max_inflight_bytes; None: no cap
        self.unsubscribes = unsubscribes  # List-Unsubscribe mailto addresses, with public_url
        self.store = store
        self.acceptor = acceptor
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
        if not address.isascii() and not envelope.smtp_utf8:
            return replies.NEEDS_SMTPUTF8.line()
        declared = 0
        for option in mail_options:
            name, _, value = option.partition("=")
            if name == "SIZE" and value.isdigit():  # ASCII: RelaySMTP._getparams checked
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
        if credential is None:
            refusal: SmtpReply | None = replies.AUTH_REQUIRED
        elif address == NULL_SENDER:  # valid syntax: say why it is refused
            refusal = replies.NULL_SENDER_REFUSED
        else:
            refusal = policy.check_sender(address, credential, self._domains)
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
        if not address.isascii() and not envelope.smtp_utf8:
            return replies.NEEDS_SMTPUTF8.line()
        if isinstance(envelope, RelayEnvelope) and address.lower() in envelope.recipient_keys:
            return replies.RCPT_OK.line()  # taken already (accept() queues it once)
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return replies.TOO_MANY_RECIPIENTS.line()
        reply = await self._recipient(envelope, address, rcpt_options)
        if reply is replies.RCPT_OK and isinstance(envelope, RelayEnvelope):
            envelope.recipient_keys.add(address.lower())
        return reply.line() if isinstance(reply, SmtpReply) else reply

    async def _recipient(
        self, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> SmtpReply | str:
        """RCPT's answer to a new address (handle_RCPT); takes it into ``envelope`` if OK."""
        unsubscribe = (
            self.unsubscribes is not None and self.unsubscribes.mail_token(address) is not None
        )
        # An unsubscribe and other recipients do not share a transaction.
        unsubscribing = isinstance(envelope, RelayEnvelope) and envelope.unsubscribe is True
        if unsubscribe:
            if envelope.rcpt_tos and not unsubscribing:
                return ONE_KIND_AT_A_TIME
            if isinstance(envelope, RelayEnvelope):
                envelope.unsubscribe = True
            envelope.rcpt_tos.append(address)
            return replies.RCPT_OK
        if unsubscribing:
            return ONE_KIND_AT_A_TIME
        reports = self.bounces is not None and self.bounces.takes(address)
        as_intake = isinstance(envelope, RelayEnvelope) and (
            envelope.intake or envelope.refusal is not None or not envelope.rcpt_tos
        )
        if envelope.mail_from == NULL_SENDER or (reports and as_intake):
            if not reports:
                return NOT_A_BOUNCE_ADDRESS
            if isinstance(envelope, RelayEnvelope):
                envelope.intake = True
            envelope.rcpt_tos.append(address)
            return replies.RCPT_OK
        if isinstance(envelope, RelayEnvelope):
            if envelope.intake:  # reports and mail do not share a transaction
                return NOT_A_BOUNCE_ADDRESS
            if envelope.refusal is not None:
                return envelope.refusal
        refusal = policy.check_recipient(address)
        if refusal is not None:
            return refusal
        if self.acceptor.suppressed(address, envelope.mail_from or ""):
            return replies.RCPT_SUPPRESSED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RCPT_OK

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
        protocol = _protocol(server, session, envelope)
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
        except asyncio.CancelledError:
            # The client left (its session ends) while its message was being committed:
            # the commit may still complete, and the client was not told; say so.
            log.warning(
                "client %s left while its message from=<%s> rcpts=%d was being queued;"
                " it may be queued without the client knowing",
                server.peer_address,
                sub.sender,
                len(sub.recipients),
            )
            raise
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


def _protocol(server: RelaySMTP, session: Session, envelope: Envelope) -> str:
    """The Received: header's "with": SMTP after HELO; after EHLO ESMTP, or UTF8SMTP for
    an SMTPUTF8 transaction (RFC 6531 3.7.3), with S for TLS and A for AUTH (RFC 3848)."""
    if not session.extended_smtp:
        return "SMTP"
    utf8 = any(str(o).upper() == "SMTPUTF8" for o in envelope.mail_options)
    protocol = "UTF8SMTP" if utf8 else "ESMTP"
    if server.is_tls:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    return protocol

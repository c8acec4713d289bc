"""Reports that come back by mail: asynchronous bounces (DSNs sent to our VERP return paths)
and complaints (ARF reports from feedback loops, sent to a VERP return path or to the
configured complaints address).

The SMTP listener hands each such message here instead of to accept(). A bounce marks its
delivery "bounced" (suppressing the address when its category says it does not exist); a
complaint records a "complained" event and suppresses the address. A report that cannot be
read or matched is logged and dropped: the sender gets its 250 all the same, since sending
it again would not make it readable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence

from mailgate.config import Settings
from mailgate.delivery.bounce import parse_verp
from mailgate.delivery.classify import is_hard_bounce, parse_reply
from mailgate.delivery.complaints import Complaint, is_feedback_report, parse_arf
from mailgate.delivery.reports import ReportedFailure, parse_dsn
from mailgate.events.categories import categorize
from mailgate.models import SmtpReply
from mailgate.store import Store
from mailgate.suppression import SuppressionList

log = logging.getLogger(__name__)

BOUNCE_RECEIVED = SmtpReply(250, "2.0.0", "Bounce received")
REPORT_RECEIVED = SmtpReply(250, "2.0.0", "Report received")
NOT_A_BOUNCE_ADDRESS = SmtpReply(550, "5.1.1", "Recipient address rejected: not a bounce address")

# RFC 5965 / 6650 feedback types that are a recipient's complaint. "auth-failure" (RFC 6591)
# reports a failed DKIM/SPF check and "not-spam" the opposite of a complaint.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})


class BounceIntake:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        suppressions: SuppressionList | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._suppressions = suppressions
        self._clock = clock
        self._local = settings.bounces.local
        self._domains = {settings.bounce_domain}
        self._verp = settings.bounces.verp
        self._complaints = settings.bounces.complaints_address
        self.enabled = self._verp or bool(self._complaints)

    def delivery_of(self, address: str) -> tuple[str, int] | None:
        """(queue id, recipient index) named by a VERP bounce address, or None."""
        if not self._verp:
            return None
        return parse_verp(address, self._local, self._domains)

    def takes(self, address: str) -> bool:
        """Whether reports sent to ``address`` are ours to read (VERP or complaints)."""
        if self._complaints and address.strip().strip("<>").lower() == self._complaints:
            return True
        return self.delivery_of(address) is not None

    async def process(self, recipients: Sequence[str], data: bytes) -> SmtpReply:
        """Record what the report says: a complaint, or a bounce for each delivery it was
        addressed to."""
        # Parsed in a thread: a report is any sender's message, up to max_message_size,
        # and reading a big one must not hold every session and request of the relay.
        if await asyncio.to_thread(is_feedback_report, data):
            await self._complaint(recipients, data)
            return REPORT_RECEIVED
        failures = await asyncio.to_thread(parse_dsn, data)
        for address in recipients:
            named = self.delivery_of(address)
            if named is None:
                if address.strip("<>").lower() == self._complaints:
                    log.warning("mail to the complaints address that is no ARF report dropped")
                continue
            queue_id, rcpt_idx = named
            if not failures:
                log.info("bounce for %s #%d reports no failure; nothing to do", queue_id, rcpt_idx)
                continue
            reply = _reply_of(failures[0])
            category = categorize(reply)
            hard = is_hard_bounce(reply, category)
            recipient = await self._store.record_bounce(
                queue_id, rcpt_idx, reply.line(), self._clock(), suppress=hard, category=category
            )
            if recipient is None:
                log.warning("bounce for unknown delivery %s #%d ignored", queue_id, rcpt_idx)
                continue
            if hard and self._suppressions is not None:
                self._suppressions.added([recipient])
            log.info(
                "%s to=<%s> bounced later: %s category=%s", queue_id, recipient, reply, category
            )
        return BOUNCE_RECEIVED

    async def _complaint(self, recipients: Sequence[str], data: bytes) -> None:
        complaint = await asyncio.to_thread(parse_arf, data)
        if complaint is None:
            log.warning("malformed feedback report (%d bytes) dropped", len(data))
            return
        if complaint.feedback_type not in COMPLAINT_TYPES:
            log.info("feedback report of type %r is no complaint", complaint.feedback_type)
            return
        named = self._named(recipients, complaint)
        if named is None and not complaint.message_id:
            log.warning(
                "complaint from %r names no delivery (no VERP address, no Message-ID); dropped",
                complaint.user_agent,
            )
            return
        detail = f"{complaint.feedback_type} report" + (
            f" from {complaint.user_agent}" if complaint.user_agent else ""
        )
        found = await self._store.record_complaint(
            self._clock(),
            named=named,
            message_id_header=complaint.message_id,
            recipient=complaint.original_rcpt_to,
            header_to=complaint.original_to,
            detail=detail,
            data=json.dumps(_event_data(complaint)),
        )
        if found is None:
            log.warning(
                "complaint for an unknown delivery dropped (message-id=%s, verp=%s)",
                complaint.message_id or "-",
                named,
            )
            return
        queue_id, _, recipient = found
        if self._suppressions is not None:
            self._suppressions.added([recipient])
        log.info("%s to=<%s> complained: %s", queue_id, recipient, detail)

    def _named(self, recipients: Sequence[str], complaint: Complaint) -> tuple[str, int] | None:
        """The delivery a VERP address names: the report's own recipient, else the
        original's envelope sender as the report gives it."""
        for address in (*recipients, complaint.original_mail_from, complaint.return_path):
            named = self.delivery_of(address) if address else None
            if named is not None:
                return named
        return None


def _event_data(complaint: Complaint) -> dict[str, str]:
    """What the event keeps about the report (events.data), without empty fields."""
    fields = {
        "feedback_type": complaint.feedback_type,
        "user_agent": complaint.user_agent,
        "source_ip": complaint.source_ip,
        "arrival_date": complaint.arrival_date,
    }
    return {k: v for k, v in fields.items() if v}


# A diagnostic that is a remote server's reply: its code, and the rest.
_REPLY_CODE = re.compile(r"([245]\d\d)[ -]\s*(.*)", re.DOTALL)


def _reply_of(failure: ReportedFailure) -> SmtpReply:
    """The reply a reported failure stands for: the remote server's own when the diagnostic
    is one ("550 5.1.1 no such user", not "550 5.1.1 550 5.1.1 no such user"), else its
    status and diagnostic under a code of the status's class."""
    m = _REPLY_CODE.match(failure.diagnostic)
    if m and m.group(1)[0] == failure.status[:1]:
        reply = parse_reply(int(m.group(1)), m.group(2))
        if reply.enhanced != failure.status and reply.enhanced.endswith(".0.0"):
            reply = parse_reply(int(m.group(1)), f"{failure.status} {m.group(2)}")  # no code
        return reply
    code = 550 if failure.status.startswith("5") else 450
    return parse_reply(code, f"{failure.status} {failure.diagnostic}".strip())

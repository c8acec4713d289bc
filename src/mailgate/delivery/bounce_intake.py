"""Asynchronous bounces: DSNs that remote servers send back to our VERP return paths.

The SMTP listener hands each such message here instead of to accept(): the VERP address
names the delivery, the report says what happened, and the delivery becomes "bounced"
(suppressing the address for a "no such user").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from mailgate.config import Settings
from mailgate.delivery.bounce import parse_verp
from mailgate.delivery.classify import is_hard_bounce, parse_reply
from mailgate.delivery.reports import parse_dsn
from mailgate.models import SmtpReply
from mailgate.store import Store
from mailgate.suppression import SuppressionList

log = logging.getLogger(__name__)

BOUNCE_RECEIVED = SmtpReply(250, "2.0.0", "Bounce received")
NOT_A_BOUNCE_ADDRESS = SmtpReply(550, "5.1.1", "Recipient address rejected: not a bounce address")


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
        self.enabled = settings.bounces.verp

    def delivery_of(self, address: str) -> tuple[str, int] | None:
        """(queue id, recipient index) named by a VERP bounce address, or None."""
        return parse_verp(address, self._local, self._domains)

    async def process(self, recipients: Sequence[str], data: bytes) -> SmtpReply:
        """Record what the report says for each delivery it was addressed to."""
        failures = parse_dsn(data)
        for address in recipients:
            named = self.delivery_of(address)
            if named is None:
                continue
            queue_id, rcpt_idx = named
            if not failures:
                log.info("bounce for %s #%d reports no failure; nothing to do", queue_id, rcpt_idx)
                continue
            failure = failures[0]
            code = 550 if failure.status.startswith("5") else 450
            reply = parse_reply(code, f"{failure.status} {failure.diagnostic}".strip())
            hard = is_hard_bounce(reply)
            recipient = await self._store.record_bounce(
                queue_id, rcpt_idx, reply.line(), self._clock(), suppress=hard
            )
            if recipient is None:
                log.warning("bounce for unknown delivery %s #%d ignored", queue_id, rcpt_idx)
                continue
            if hard and self._suppressions is not None:
                self._suppressions.added([recipient])
            log.info("%s to=<%s> bounced later: %s", queue_id, recipient, reply)
        return BOUNCE_RECEIVED

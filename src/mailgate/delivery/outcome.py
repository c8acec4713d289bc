"""What an attempt changes in the queue: the record the delivery process sends back, and
the updates of a delivery after a result.

Apart from attempt.py so that the relay's process, which records outcomes and defers
attempts that did not finish, does not load the transports, the router and DKIM.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from mailgate.config import Settings
from mailgate.delivery.classify import connection_reply
from mailgate.delivery.retry import backoff, expired
from mailgate.delivery.upstream_id import upstream_message_id
from mailgate.events.categories import EXPIRED, categorize
from mailgate.logs import fields, recipient_domain
from mailgate.models import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryStatus,
    DeliveryUpdate,
    NewMessage,
    Outcome,
    QueuedMessage,
    Suppression,
)

# The attempt's log lines keep the logger name they always had.
log = logging.getLogger("mailgate.delivery.attempt")


@dataclass(slots=True)
class AttemptRecord:
    """What one attempt changes in the queue, recorded in one transaction."""

    updates: list[DeliveryUpdate]
    dkim: bytes | None = None  # a signature made now, kept for the retries
    suppress: list[Suppression] = field(default_factory=list)
    dsns: list[NewMessage] = field(default_factory=list)


def update_for(
    settings: Settings,
    msg: QueuedMessage,
    d: ClaimedDelivery,
    r: AttemptResult,
    failed: list[AttemptResult],
    now: float,
    *,
    direct: bool = False,
    may_fail: bool = True,
    started: float | None = None,
    dkim: str | None = None,
) -> DeliveryUpdate:
    """The delivery's new state after result ``r`` (``direct``: accepted by the recipient's
    own MX, so "delivered" rather than "sent"; ``may_fail``: a temporary failure past
    ``max_age``, or of an attempt-once message, fails the delivery, else it is deferred).

    An attempt-once message (``msg.attempt_once``) gets no retries: its client learns the
    result synchronously and can ask for a retry itself (Store.requeue). ``started``: when
    the attempt began, for the duration in the log and on the event; ``dkim``: what the
    copy sent was signed with (headers.dkim_signers), for the event."""
    attempts = d.attempts + 1
    duration = None if started is None else round((now - started) * 1000, 1)
    nxt: float | None = None
    if r.outcome is Outcome.SENT:
        status = DeliveryStatus.DELIVERED if direct else DeliveryStatus.SENT
    elif r.outcome is Outcome.PERMANENT:
        status = DeliveryStatus.BOUNCED
    elif may_fail and (msg.attempt_once or expired(_age_from(msg, d), now, settings.retry)):
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.DEFERRED
        # The jitter is the message's, not each recipient's: its deliveries stay due
        # together, are claimed and attempted together, and a failure that ends them all
        # makes one DSN (100 recipients past max_age made up to 100 DSNs to one sender).
        nxt = now + backoff(attempts, settings.retry, random.Random(f"{msg.id}/{attempts}"))
    category = ""
    if status is DeliveryStatus.FAILED and not msg.attempt_once:
        category = EXPIRED  # given up after max_age, whatever the last reply was
    elif status in (DeliveryStatus.BOUNCED, DeliveryStatus.FAILED, DeliveryStatus.DEFERRED):
        category = categorize(r.reply)
    log.info(
        "%s to=<%s> status=%s attempts=%d provider=%s reply=%s%s%s",
        msg.id,
        d.recipient,
        status.value,
        attempts,
        r.provider or "-",
        r.reply,
        f" category={category}" if category else "",
        "".join(f" (failed over from {f.provider}: {f.reply})" for f in failed),
        extra=fields(
            event=status.value,
            message_id=msg.id,
            recipient_domain=recipient_domain(d.recipient),
            provider=r.provider or None,
            reply=r.reply.line(),
            attempt=attempts,
            duration_ms=duration,
            category=category or None,
            failed_over=[f.provider for f in failed] or None,
            next_attempt_at=nxt,
        ),
    )
    return DeliveryUpdate(
        message_id=msg.id,
        rcpt_idx=d.rcpt_idx,
        recipient=d.recipient,
        status=status,
        attempts=attempts,
        next_attempt_at=nxt,
        provider=r.provider,
        response=r.reply.line(),
        event=status.value,
        failovers=tuple((f.provider, f.reply.line()) for f in failed),
        provider_message_id=(
            upstream_message_id(r.reply.text) if r.outcome is Outcome.SENT else ""
        ),
        category=category,
        duration_ms=duration,
        dkim=dkim,
    )


def _age_from(msg: QueuedMessage, d: ClaimedDelivery) -> float:
    """Where ``max_age`` counts from: the message's acceptance, or the delivery's retry
    (Store.requeue) after it had failed, which would otherwise fail again at once."""
    return max(msg.created_at, d.retried_at or 0.0)


def local_failure(why: str) -> AttemptResult:
    """A temporary failure of the relay's own (4.3.0), not of a provider."""
    return AttemptResult(Outcome.TEMPORARY, connection_reply("internal", why), "", "local")


def unfinished(settings: Settings, msg: QueuedMessage, why: str, now: float) -> AttemptRecord:
    """Every delivery of ``msg`` deferred for a local reason: the attempt did not finish.

    Deferred even past ``max_age``: the next attempt fails it then, with its DSN.
    """
    result = local_failure(why)
    return AttemptRecord(
        [update_for(settings, msg, d, result, [], now, may_fail=False) for d in msg.deliveries]
    )

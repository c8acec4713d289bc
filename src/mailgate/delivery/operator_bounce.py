"""The DSNs of an operator's bounce (``mailgate queue bounce``, the admin API).

Built inside the store's bounce transaction (store/operator.py takes this as its DSN
builder), so the DSN names exactly the deliveries that were bounced. Same rules as the
delivery loop's DSNs: none for the null sender, a DSN or an auto-reply (no loops), nor
for an attempt-once message, whose client learns the result from the API.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from mailgate.delivery.bounce import FailedRecipient, dsn_message, should_send_dsn
from mailgate.models import NewMessage
from mailgate.store.operator import BouncedMessage, DsnBuilder

log = logging.getLogger(__name__)

# RFC 3463 5.0.0 (other undefined status): the remote side never refused it, we gave up.
STATUS = "5.0.0"
DEFAULT_REASON = "bounced by the relay's operator"


def reply_line(reason: str) -> str:
    """The last response the bounced deliveries carry, as an SMTP reply line."""
    return f"550 {STATUS} {' '.join(reason.split()) or DEFAULT_REASON}"


def operator_dsns(
    hostname: str, bounced: Sequence[BouncedMessage], reason: str, now: float
) -> list[NewMessage]:
    """One DSN per message with a sender to tell; see the module doc for who gets none."""
    out: list[NewMessage] = []
    for msg in bounced:
        if msg.attempt_once or not should_send_dsn(msg.sender, msg.raw):
            continue
        failures = [
            FailedRecipient(recipient=r, status=STATUS, diagnostic=reason, last_attempt=now)
            for r in msg.recipients
        ]
        dsn = dsn_message(
            original=msg.raw,
            queue_id=msg.id,
            envelope_sender=msg.sender,
            hostname=hostname,
            failures=failures,
            now=now,
            arrival_date=msg.created_at,
        )
        if dsn is not None:
            out.append(dsn)
    return out


def dsn_builder(hostname: str) -> DsnBuilder:
    """The builder for ``Store.bounce``: a partial of a module-level function, so it can
    be handed to the writer's process."""
    return functools.partial(operator_dsns, hostname)

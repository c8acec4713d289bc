"""Event type names: what the store records -> what the API and webhooks call it.

The one place that maps them, so that ``GET /v1/messages/{id}/events``, webhooks and
anything else that shows events agree. The store's names are short and stable (they are
in the database); the API uses the MailingAPI seed's names (queued, sent, delivered,
opened, clicked, bounced, complained, unsubscribed) plus the relay's own states that a
client can act on (scheduled, deferred, failed, cancelled, held, released, ...).
"""

from __future__ import annotations

from mailgate.events.webhook_types import MESSAGE_EVENTS

# store type -> API type. Every type the store writes is listed; an unknown one (from a
# newer node during a rolling upgrade) passes through unchanged.
API_NAMES: dict[str, str] = {
    # the seed's event types
    "queued": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "bounced": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
    # the seed's statuses that are also events here
    "scheduled": "scheduled",
    "failed": "failed",
    "cancelled": "cancelled",
    # the relay's own
    "deferred": "deferred",  # a temporary failure; another attempt follows
    "failover": "failover",  # one provider failed within an attempt, the next one is tried
    "held": "held",  # an operator or a paused job holds the delivery
    "released": "released",  # ... and let it go on
    "retry": "requeued",  # an operator asked for another attempt now
}

# API types that are sent as webhooks, as ``message.<type>`` (events/webhook_types.py; the
# outbox triggers match the store's type, the same name for each of these).
WEBHOOK_TYPES: frozenset[str] = frozenset(MESSAGE_EVENTS)


def api_name(store_type: str) -> str:
    """The API's name for an event type the store recorded."""
    return API_NAMES.get(store_type, store_type)


def webhook_name(store_type: str) -> str | None:
    """``message.<type>`` for the events webhooks carry; None for internal-only ones."""
    name = api_name(store_type)
    return f"message.{name}" if name in WEBHOOK_TYPES else None

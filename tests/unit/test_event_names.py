"""Event type names: every type the store writes has one API name; webhooks get theirs."""

from __future__ import annotations

from mailgate.events.names import API_NAMES, WEBHOOK_TYPES, api_name, webhook_name
from mailgate.models import DeliveryStatus

SEED_TYPES = ("queued", "sent", "delivered", "opened", "clicked", "bounced", "complained")


def test_every_store_type_is_named() -> None:
    written = {s.value for s in DeliveryStatus} | {"failover", "released", "retry"}
    assert written <= set(API_NAMES)
    for name in (*SEED_TYPES, "unsubscribed"):
        assert api_name(name) == name
    assert api_name("retry") == "requeued"
    assert api_name("something_new") == "something_new"


def test_webhook_names() -> None:
    assert webhook_name("delivered") == "message.delivered"
    assert webhook_name("unsubscribed") == "message.unsubscribed"
    assert webhook_name("failover") is None and webhook_name("held") is None
    expected = (
        "queued sent delivered deferred bounced failed opened clicked complained "
        "unsubscribed cancelled"
    )
    assert frozenset(expected.split()) == WEBHOOK_TYPES


def test_webhook_events_keep_their_store_name() -> None:
    """The outbox triggers subscribe 'message.' || the store's type: for every webhook
    event the API's name must be the store's."""
    for name in WEBHOOK_TYPES:
        assert API_NAMES[name] == name

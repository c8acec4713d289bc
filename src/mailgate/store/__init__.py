"""The durable queue: schema, engines, group commit and every SQL statement."""

from mailgate.store.keys import KeyRecord
from mailgate.store.store import (
    QUEUE_ACTIONS,
    DeliveryUpdate,
    IdempotentAnswer,
    NewMessage,
    QueueFilter,
    Store,
)
from mailgate.store.suppressions import Suppression
from mailgate.store.templates import TemplateRecord

__all__ = [
    "QUEUE_ACTIONS",
    "DeliveryUpdate",
    "IdempotentAnswer",
    "KeyRecord",
    "NewMessage",
    "QueueFilter",
    "Store",
    "Suppression",
    "TemplateRecord",
]

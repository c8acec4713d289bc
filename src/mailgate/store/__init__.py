"""The durable queue: schema, engines, group commit and every SQL statement."""

from mailgate.store.keys import KeyRecord
from mailgate.store.store import (
    DeliveryUpdate,
    IdempotentAnswer,
    NewMessage,
    QueueFilter,
    Store,
)
from mailgate.store.suppressions import Suppression
from mailgate.store.templates import TemplateRecord

__all__ = [
    "DeliveryUpdate",
    "IdempotentAnswer",
    "KeyRecord",
    "NewMessage",
    "QueueFilter",
    "Store",
    "Suppression",
    "TemplateRecord",
]

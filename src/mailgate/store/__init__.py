"""The durable queue: schema, engines, group commit and every SQL statement."""

from mailgate.models import DeliveryUpdate, NewMessage, Suppression
from mailgate.store.jobs import JobProgress, NewJob
from mailgate.store.keys import KeyRecord
from mailgate.store.quota import QuotaRace, QuotaTake
from mailgate.store.store import IdempotentAnswer, QueueFilter, Store
from mailgate.store.templates import TemplateRecord

__all__ = [
    "DeliveryUpdate",
    "IdempotentAnswer",
    "JobProgress",
    "KeyRecord",
    "NewJob",
    "NewMessage",
    "QueueFilter",
    "QuotaRace",
    "QuotaTake",
    "Store",
    "Suppression",
    "TemplateRecord",
]

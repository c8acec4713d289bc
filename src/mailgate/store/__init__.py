"""The durable queue: schema, engines, group commit and every SQL statement.

The names below load on first use (PEP 562), so a process that needs one small module
of the store (the delivery process reading big bodies: ``store/bodies.py``) does not
import SQLAlchemy and the whole store with it (about 17 MB).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgate.models import DeliveryUpdate, NewMessage, Suppression
    from mailgate.store.jobs import JobProgress, NewJob
    from mailgate.store.keys import KeyRecord
    from mailgate.store.quota import QuotaRace, QuotaTake
    from mailgate.store.store import IdempotentAnswer, QueueFilter, Store
    from mailgate.store.templates import TemplateRecord

_EXPORTS = {
    "DeliveryUpdate": "mailgate.models",
    "NewMessage": "mailgate.models",
    "Suppression": "mailgate.models",
    "JobProgress": "mailgate.store.jobs",
    "NewJob": "mailgate.store.jobs",
    "KeyRecord": "mailgate.store.keys",
    "QuotaRace": "mailgate.store.quota",
    "QuotaTake": "mailgate.store.quota",
    "IdempotentAnswer": "mailgate.store.store",
    "QueueFilter": "mailgate.store.store",
    "Store": "mailgate.store.store",
    "TemplateRecord": "mailgate.store.templates",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""What the relay and the webhook process trade through their pipe (a module of its own:
the child runs as ``__main__``, so classes defined there would not unpickle here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailgate.pickling import by_fields


@dataclass(frozen=True, slots=True)
class WebhookHello:
    allow_private: bool
    timeout: float
    log_level: str


@by_fields  # one crosses the pipe per webhook, each way (pickling.py says why)
@dataclass(frozen=True, slots=True)
class WebhookRequest:
    msg_id: str  # webhook-id: the outbox row's, stable across retries
    url: str
    keys: tuple[bytes, ...]
    row: dict[str, Any]  # what store.webhooks.claim read; the body is made here


@by_fields
@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    status: int | None  # the HTTP status, None when no answer came
    error: str
    retry_after: float | None

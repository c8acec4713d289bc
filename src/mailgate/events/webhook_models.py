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


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One post, as the webhook process makes it from a batch."""

    msg_id: str  # webhook-id: the outbox row's, stable across retries
    url: str
    keys: tuple[bytes, ...]
    row: dict[str, Any]  # what store.webhooks.claim read; the body is made here


@by_fields  # pickling.py says why
@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """One claim's deliveries to one endpoint, sent to the webhook process in one frame
    and answered in one: a task, a future and two pipe frames per webhook cost the relay's
    event loop more than the writer spent on webhooks (scripts/bench/webhook_relay.py)."""

    endpoint: str  # the endpoint's id: its requests share one limit in the child
    url: str
    keys: tuple[bytes, ...]
    limit: int  # requests in flight to this endpoint at most ([webhooks] max_in_flight)
    items: tuple[tuple[str, dict[str, Any]], ...]  # (webhook-id, outbox row)

    def requests(self) -> list[WebhookRequest]:
        return [WebhookRequest(mid, self.url, self.keys, row) for mid, row in self.items]


@by_fields
@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    status: int | None  # the HTTP status, None when no answer came
    error: str
    retry_after: float | None

"""Request and response shapes of ``/v1/admin/...`` (validation and /v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictBool

from mailgate.submission.request import Model

QUEUE_ACTIONS = ("retry", "hold", "release", "delete", "bounce", "requeue")


class QueueSelection(Model):
    """Which deliveries a queue action applies to: every field given must match."""

    ids: list[str] = Field(default=[], max_length=10_000, description="Message ids")
    to: str = Field(default="", max_length=320, description="Recipient address or domain")
    from_: str = Field(
        default="", alias="from", max_length=320, description="Envelope sender address or domain"
    )
    provider: str = Field(
        default="", max_length=200, description="Last tried through, or pinned to, this provider"
    )
    older_than: str = Field(
        default="", max_length=32, description="Accepted longer ago than this, e.g. 30m, 2h, 1d"
    )
    # Strict: "yes" or "1" acting on every delivery would be a costly typo.
    all: StrictBool = Field(default=False, description="true: no filter needed (every delivery)")
    reason: str = Field(
        default="", max_length=500, description="bounce: the diagnostic the DSN and event carry"
    )


class QueueEntry(BaseModel):
    message_id: str
    rcpt_idx: int
    recipient: str
    sender: str
    subject: str
    status: str
    attempts: int
    created_at: str
    next_attempt_at: str | None
    updated_at: str
    provider: str | None = Field(description="The provider of the last attempt")
    pinned_provider: str | None
    last_response: str | None
    in_flight: bool = Field(description="Being attempted now: actions leave it alone")


class QueueMeta(BaseModel):
    limit: int
    offset: int
    count: int


class QueueList(BaseModel):
    data: list[QueueEntry]
    meta: QueueMeta


class QueueActionResult(BaseModel):
    action: str
    deliveries: int = Field(description="Deliveries changed")
    messages: int = Field(description="Messages they belong to")
    dsns: list[str] = Field(default=[], description="bounce: ids of the DSN messages queued")


class QueueActionData(BaseModel):
    data: QueueActionResult


class ProviderOut(BaseModel):
    name: str
    node: str = Field(description="The node whose delivery process answered")
    kind: str
    priority: int
    breaker: str | None = Field(description="closed, open or half-open; null for kind mx")
    connections_in_use: int | None
    max_connections: int
    rate_limit: str | None = Field(description="The configured rate, e.g. 14/s")
    rate: float | None = Field(description="Attempts per second over the last minute")
    last_success_at: str | None
    last_error_at: str | None
    last_error: str | None


class ProviderList(BaseModel):
    node: str
    delivery: str = Field(description="running, or disabled ([delivery] enabled = false)")
    data: list[ProviderOut]


class WindowRate(BaseModel):
    count: int
    per_second: float


class EventRates(BaseModel):
    m1: WindowRate = Field(alias="1m")
    m5: WindowRate = Field(alias="5m")
    m15: WindowRate = Field(alias="15m")


class OldestPending(BaseModel):
    created_at: str
    age_seconds: float


class Stats(BaseModel):
    node: str
    at: str
    rates: dict[str, EventRates] = Field(
        description="accepted, sent, delivered, deferred, bounced, failed: events recorded "
        "by every node over the last 1, 5 and 15 minutes"
    )
    depth: dict[str, int] = Field(description="Deliveries per status (every status listed)")
    oldest_pending: OldestPending | None


class StatsData(BaseModel):
    data: Stats


# For /v1/openapi.json: (method, path, summary, request, status, response, needs "send").
OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, int, type[BaseModel], bool]] = [
    (
        "get",
        "/v1/admin/queue",
        "Admin: list deliveries by filter (mailgate queue)",
        None,
        200,
        QueueList,
        False,
    ),
    (
        "post",
        "/v1/admin/queue/{action}",
        "Admin: retry, hold, release, delete or bounce (with a DSN) the deliveries a filter "
        "selects",
        QueueSelection,
        200,
        QueueActionData,
        False,
    ),
    (
        "get",
        "/v1/admin/providers",
        "Admin: each provider's breaker, connections, rate, last error and success (this node)",
        None,
        200,
        ProviderList,
        False,
    ),
    (
        "get",
        "/v1/admin/stats",
        "Admin: event rates over 1, 5 and 15 minutes, depth by status, oldest pending",
        None,
        200,
        StatsData,
        False,
    ),
]

_STRING = {"type": "string"}
QUERY: dict[str, list[dict[str, Any]]] = {
    "/v1/admin/queue": [
        {"name": "ids", "description": "Message ids, comma-separated", "schema": _STRING},
        {"name": "to", "description": "Recipient address or domain", "schema": _STRING},
        {"name": "from", "description": "Envelope sender address or domain", "schema": _STRING},
        {"name": "provider", "description": "Last tried through, or pinned to", "schema": _STRING},
        {"name": "older_than", "description": "e.g. 30m, 2h, 1d", "schema": _STRING},
        {
            "name": "status",
            "description": "Comma-separated statuses, or pending (default) or all",
            "schema": _STRING,
        },
        {
            "name": "limit",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        {"name": "offset", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    ],
}

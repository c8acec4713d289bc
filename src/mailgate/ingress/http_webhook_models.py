"""The shapes of ``/v1/webhooks``: what it takes and what it answers (also the OpenAPI
document's)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from mailgate.events.webhook_types import EVENT_TYPES
from mailgate.submission.request import Model


class WebhookIn(Model):
    url: str = Field(max_length=2000, description="http(s); private addresses are refused")
    events: list[str] = Field(default=["*"], description=f"Any of {', '.join(EVENT_TYPES)}; *")
    description: str = Field(default="", max_length=500)


class WebhookUpdate(Model):
    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="true enables it again after a 410")


class ReplayIn(Model):
    since: dt.datetime = Field(description="deliveries made since then (UTC unless it says)")
    status: list[str] = Field(default=["failed"], description="failed, succeeded, pending")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    source: str = Field(description="config (relay.toml) or api")
    enabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str | None
    updated_at: str | None
    secret: str | None = Field(
        default=None, description="whsec_...: only when made or rotated, shown this once"
    )


class WebhookData(BaseModel):
    data: WebhookOut


class WebhookList(BaseModel):
    data: list[WebhookOut]


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="the webhook-id header's value")
    endpoint_id: str
    event_type: str
    status: str = Field(description="pending, succeeded or failed")
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str | None
    updated_at: str | None


class DeliveriesMeta(BaseModel):
    count: int
    next_before: str | None = Field(description="pass as before= for the next page")


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDeliveryOut]
    meta: DeliveriesMeta


class ReplayOut(BaseModel):
    replayed: int


class ReplayData(BaseModel):
    data: ReplayOut

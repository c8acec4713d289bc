"""Request and response shapes of the native HTTP API (MailingAPI's ``/v1/messages``).

The same models validate requests and generate ``/v1/openapi.json``. A send's own fields
live in :mod:`mailgate.submission.request` (the CLI and analyze use them too); what the
values mean is checked by :mod:`mailgate.submission.prepare`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mailgate.submission.request import (
    AttachmentIn,
    Model,
    PinnedProvider,
    SendRequest,
    SingleAttempt,
    Tracking,
)


class BatchMessage(SendRequest):
    """One entry of ``messages`` in a batch: the same fields as a single send."""


class BatchRequest(Model):
    from_: str | None = Field(default=None, alias="from")
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] | None = None
    attachments: list[AttachmentIn] | None = None
    template_id: str | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    metadata: dict[str, Any] | None = None
    tracking: Tracking | None = None
    scheduled_at: datetime | None = None
    provider: PinnedProvider = None
    single_attempt: SingleAttempt = False
    recipient_variables: dict[str, dict[str, Any]] | None = Field(
        default=None, description="One message per recipient address, rendered with its variables."
    )
    messages: list[BatchMessage] | None = Field(default=None, description="Up to 1000 messages.")
    campaign_id: str | None = Field(
        default=None, max_length=200, description="Kept with the batch's job."
    )


class TemplateIn(Model):
    id: str | None = Field(
        default=None,
        description="Your own id ([A-Za-z0-9_.-], 1-64 characters); default: one is made.",
    )
    name: str = Field(min_length=1, max_length=200)
    from_: str | None = Field(
        default=None, alias="from", description="The sender of requests that name none."
    )
    subject: str = ""
    html: str = ""
    text: str = ""
    active: bool = True


class TemplateUpdate(Model):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    from_: str | None = Field(default=None, alias="from", description='"" removes it.')
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    active: bool | None = None


# ----------------------------------------------------------------- responses


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class MessageOut(BaseModel):
    id: str
    message_id: str
    from_: str = Field(alias="from")
    to: str | list[str]
    subject: str
    status: str
    tags: list[str]
    metadata: dict[str, Any]
    created_at: str
    scheduled_at: str | None = None
    suppressed: list[str] | None = Field(
        default=None, description="Recipients left out because they are suppressed."
    )


class RecipientOut(BaseModel):
    email: str
    status: str
    attempts: int
    last_response: str
    provider: str
    provider_message_id: str = Field(
        description='The provider\'s id for the message, from its reply; "" when it gave none.'
    )
    updated_at: str
    bounce_category: str | None = Field(
        default=None,
        description="Why a bounced, failed or deferred delivery did not go out, in KumoMTA's "
        "bounce classes (InvalidRecipient, BadDomain, QuotaIssues, SpamBlock, ...).",
    )


class MessageDetail(MessageOut):
    sent_at: str | None
    delivered_at: str | None
    scheduled_at: str | None
    recipients: list[RecipientOut]


class MessageData(BaseModel):
    data: MessageOut


class MessageDetailData(BaseModel):
    data: MessageDetail


class ListMeta(BaseModel):
    count: int
    total: int
    limit: int
    offset: int
    has_more: bool


class MessageList(BaseModel):
    data: list[MessageOut]
    meta: ListMeta


class BatchItem(BaseModel):
    index: int
    status: str
    id: str | None = None
    to: str | list[str] | None = None
    error: ErrorBody | None = None


class BatchResult(BaseModel):
    total: int
    queued: int
    errors: int
    messages: list[BatchItem]
    job_id: str | None = Field(
        description="The batch's job (GET /v1/jobs/{id}); null when nothing was queued."
    )


class BatchData(BaseModel):
    data: BatchResult


class EventOut(BaseModel):
    id: str
    type: str
    timestamp: str
    recipient: str
    metadata: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]


class AnalyzeIssue(BaseModel):
    type: str = Field(
        description="validation, content, subject, links, compliance, size, "
        "html, attachments, authentication or recipients"
    )
    subtype: str = Field(description="e.g. missing_text; for validation: send's error code")
    severity: str = Field(description="critical, high, medium, low or info")
    detail: str
    penalty: int


class AnalyzeResult(BaseModel):
    score: int = Field(description="100 minus the penalties, at least 0")
    grade: str = Field(description="excellent, good, fair or poor")
    issues_count: int
    critical_count: int
    high_count: int
    medium_count: int
    low_count: int
    info_count: int = Field(description="Checks that could not run (e.g. the DNS did not answer)")
    can_send: bool = Field(description="false when send would refuse the request")
    recommendations: list[str]
    issues: list[AnalyzeIssue] = Field(description="Worst first")


class AnalyzeData(BaseModel):
    data: AnalyzeResult


class ScheduledOut(BaseModel):
    id: str
    to: str | list[str]
    subject: str
    scheduled_at: str | None
    status: str


class PageMeta(BaseModel):
    count: int
    limit: int
    offset: int
    has_more: bool = Field(description="Another page follows: ask with offset + limit")


class ScheduledList(BaseModel):
    data: list[ScheduledOut]
    meta: PageMeta


class CancelOut(BaseModel):
    id: str
    status: str
    created_at: str


class CancelData(BaseModel):
    data: CancelOut


class TemplateOut(BaseModel):
    id: str
    name: str
    from_: str | None = Field(default=None, alias="from")
    subject: str
    html: str
    text: str
    active: bool
    created_at: str
    updated_at: str


class TemplateData(BaseModel):
    data: TemplateOut


class TemplateList(BaseModel):
    data: list[TemplateOut]


class JobCounts(BaseModel):
    total: int = Field(description="Recipients in the job.")
    sent: int = Field(description="Sent or delivered.")
    failed: int = Field(description="Bounced, failed or cancelled.")
    pending: int = Field(description="Not finished yet (including held while paused).")
    percentage: float = Field(description="100 * sent / total, one decimal.")


class JobOut(BaseModel):
    id: str
    status: str = Field(description="queued, processing, paused, stopped or completed.")
    progress: JobCounts
    campaign_id: str | None
    created_at: str
    started_at: str | None = Field(description="The first attempt of any of its messages.")
    updated_at: str


class JobData(BaseModel):
    data: JobOut


class JobList(BaseModel):
    data: list[JobOut]
    meta: PageMeta

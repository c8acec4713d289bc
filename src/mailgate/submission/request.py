"""What a send request holds: the shapes shared by the HTTP API (native and compat), the
CLI's ``mailgate send`` and /v1/messages/analyze.

They check shapes and types only; what the values mean (addresses, domains, limits) is
checked by :mod:`mailgate.submission.prepare`, so that every refusal carries the seed's
error code and the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Recipients = str | list[str]
PinnedProvider = Annotated[
    str | None,
    Field(
        max_length=200,
        description="The name of a configured provider: the message goes through it only "
        "(no failover to others; deferred while it is down). Unknown: 404 provider_not_found.",
    ),
]
SingleAttempt = Annotated[
    bool,
    Field(
        description="One attempt decides: a temporary failure makes the delivery 'failed' "
        "at once instead of retrying, and no bounce message (DSN) is sent to the sender.",
    ),
]


class Model(BaseModel):
    """Unknown fields are refused, and aliases (``from``) and names both populate."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AttachmentIn(Model):
    filename: str = Field(default="", max_length=255)
    content: str = Field(
        description="Base64-encoded content (at most 10 MiB, 10,485,760 bytes, decoded)."
    )
    content_type: str = Field(default="application/octet-stream", max_length=255)
    content_id: str | None = Field(
        default=None, max_length=255, description="Set for inline images: <img src='cid:ID'>."
    )


class Tracking(Model):
    """Unset: the relay's ``[tracking]`` defaults (off unless configured)."""

    opens: bool | None = Field(default=None, description="An open pixel in the html part.")
    clicks: bool | None = Field(
        default=None, description="Links of the html and text parts redirect through the relay."
    )
    unsubscribe: bool | None = Field(
        default=None,
        description="RFC 8058 List-Unsubscribe headers. Unset: on for tracked and batch mail, "
        "off when opens and clicks are both false.",
    )


class SendRequest(Model):
    from_: str | None = Field(
        default=None,
        alias="from",
        description='"Name <addr>" or a bare address. Without it: the template\'s from, '
        "the key's default sender, or [compat] default_from, in that order.",
    )
    to: Recipients = Field(description="One address or a list.")
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    cc: Recipients | None = None
    bcc: Recipients | None = None
    reply_to: str | None = None
    headers: dict[str, str] | None = None
    attachments: list[AttachmentIn] | None = None
    template_id: str | None = None
    template_data: dict[str, Any] | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    metadata: dict[str, Any] | None = None
    tracking: Tracking | None = None
    scheduled_at: datetime | None = Field(
        default=None, description="ISO 8601; in the future: held as 'scheduled' until then."
    )
    optimize_send_time: bool | None = Field(
        default=None, description="Accepted for compatibility; only false is supported."
    )
    provider: PinnedProvider = None
    single_attempt: SingleAttempt = False

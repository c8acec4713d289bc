"""What API request values mean: addresses, domains, headers, attachments, templates.

Every refusal is an ApiError with the seed's error code and the field it is about, so a
client can fix its request without guessing. Nothing the client sends reaches a header
or the envelope without passing through here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError

from mailgate import mime, policy
from mailgate.address_check import checked_address
from mailgate.config import Settings
from mailgate.exceptions import PolicyRefused
from mailgate.headers import built_info
from mailgate.json_text import dumps
from mailgate.models import Credential, Submission
from mailgate.rendering import TemplateProblem, render_all
from mailgate.store import TemplateRecord
from mailgate.submission.request import AttachmentIn, SendRequest

MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_TAGS = 50
MAX_TAG_LENGTH = 200
MAX_METADATA_BYTES = 10_000
MAX_SCHEDULE_AHEAD = 365 * 86400
# A display name's length: one without spaces cannot be folded, and a header line holds
# 998 characters (RFC 5322 2.1.1).
MAX_DISPLAY_NAME = 256

# Headers the API sets itself (or that would break the trace); every Content-* header is
# refused too (_headers): MIME's, which would break the message's structure.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "DKIM-Signature",
        "Sender",
        "Return-Path",
        "Received",
        "MIME-Version",
    )
)
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext, kept short enough to fold
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is fine in a header value
_BASE64_SPACE = re.compile(r"[ \t\r\n]+")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}$")
_NAME_ADDR = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$", re.DOTALL)


class ApiError(Exception):
    """An HTTP error answer: status, the seed's error code, a message, the field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    @classmethod
    def refused(cls, exc: PolicyRefused) -> ApiError:
        """accept()'s refusal as an HTTP answer (with Retry-After when it says when)."""
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return cls(exc.http_status, exc.error_code, exc.reply.text, exc.field, headers)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The native API's error: always the three keys of docs/api.md, ``field`` null when
    no field of the request is at fault (it was left out: clients reading it failed)."""
    return {"error": {"code": code, "message": message, "field": field}}


def invalid(code: str, message: str, field: str | None) -> ApiError:
    return ApiError(422, code, message, field)


@dataclass(slots=True)  # a record: not frozen, see models.py
class Prepared:
    """A validated request: the submission for accept() and what the answer shows."""

    submission: Submission
    sender: str
    to_repr: str | list[str]
    subject: str
    tags: list[str]
    metadata: dict[str, Any]


@lru_cache(maxsize=4096)
def parse_mailbox(value: str, field: str, code: str) -> mime.Mailbox:
    """'Name <addr>' or 'addr' -> Mailbox with a validated, normalised address.

    Cached: an application sends from the same few addresses to many repeated ones, and
    full validation costs ~90 us (refusals raise, so they are never cached).
    """
    if not isinstance(value, str) or not value.strip():
        raise invalid(code, f"{field}: an email address is required", field)
    if HEADER_CONTROL.search(value):
        raise invalid(code, f"{field}: control characters are not allowed", field)
    m = _NAME_ADDR.match(value)
    name, addr = (m.group(1), m.group(2).strip()) if m else ("", value.strip())
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"')
    if len(name) > MAX_DISPLAY_NAME:
        raise invalid(code, f"{field}: the name is over {MAX_DISPLAY_NAME} characters", field)
    try:
        # *.test (RFC 6761) is allowed: staging setups capture it with the maildir
        # provider; other special-use names (.invalid, .localhost, ...) stay refused.
        address = checked_address(addr)
    except EmailNotValidError as exc:
        raise invalid(
            code, f"{field}: {_shown(addr)} is not a valid address: {exc}", field
        ) from None
    if policy.split_address(address) is None:
        raise invalid(code, f"{field}: {_shown(addr)} is not a valid address", field)
    return mime.Mailbox(address=address, name=name.strip())


def _shown(value: str, limit: int = 100) -> str:
    """``value`` quoted for an error message, cut short: an answer need not echo 100 KB."""
    return (
        repr(value)
        if len(value) <= limit
        else repr(value[:limit]) + f"... ({len(value)} characters)"
    )


def _recipients(value: str | list[str] | None, field: str) -> list[mime.Mailbox]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    return [
        parse_mailbox(
            v, f"{field}[{i}]" if not isinstance(value, str) else field, "invalid_to_address"
        )
        for i, v in enumerate(items)
    ]


def _headers(raw: dict[str, str] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in (raw or {}).items():
        field = f"headers.{name}"
        if not _FIELD_NAME.match(name):
            raise invalid("invalid_header", f"{field}: not a valid header name", field)
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith("content-"):  # MIME's (RFC 2045)
            raise invalid(
                "invalid_header", f"{field}: set by the API, use the request field instead", field
            )
        if not isinstance(value, str) or HEADER_CONTROL.search(value) or len(value) > 2000:
            raise invalid(
                "invalid_header",
                f"{field}: value must be text without line breaks (at most 2000 characters)",
                field,
            )
        out.append((name, value))
    return out


def _attachments(items: Sequence[AttachmentIn] | None) -> list[mime.Attachment]:
    items = items or []
    if len(items) > MAX_ATTACHMENTS:
        raise invalid(
            "too_many_attachments", f"at most {MAX_ATTACHMENTS} attachments", "attachments"
        )
    out: list[mime.Attachment] = []
    cids: set[str] = set()
    for i, a in enumerate(items):
        field = f"attachments[{i}]"
        text = a.content
        if _BASE64_SPACE.search(text):
            # Wrapped at 76 columns, as base64 tools and MIME libraries write it.
            text = _BASE64_SPACE.sub("", text)
        try:
            content = mime.Base64Text.parse(text)
        except ValueError:
            raise invalid(
                "invalid_attachment", f"{field}.content: not valid base64", f"{field}.content"
            ) from None
        if content.size > MAX_ATTACHMENT_BYTES:
            raise invalid(
                "attachment_too_large",
                f"{field}: larger than 10 MiB (10,485,760 bytes) decoded",
                f"{field}.content",
            )
        if HEADER_CONTROL.search(a.filename) or "/" in a.filename or "\\" in a.filename:
            raise invalid(
                "invalid_attachment",
                f"{field}.filename: not a valid file name",
                f"{field}.filename",
            )
        if not _CONTENT_TYPE.match(a.content_type):
            raise invalid(
                "invalid_attachment",
                f"{field}.content_type: expected type/subtype",
                f"{field}.content_type",
            )
        if a.content_type.lower().startswith("multipart/"):
            # It would go out without its boundary, in base64 (RFC 2046 5.1): not a file.
            raise invalid(
                "invalid_attachment",
                f"{field}.content_type: a multipart type is not an attachment's",
                f"{field}.content_type",
            )
        cid = (a.content_id or "").strip()
        if cid.startswith("<") and cid.endswith(">"):
            cid = cid[1:-1]  # as it appears in a Content-ID header
        if cid and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]{1,200}", cid):
            raise invalid(
                "invalid_attachment", f"{field}.content_id: not a valid id", f"{field}.content_id"
            )
        if cid and cid.lower() in cids:
            raise invalid(
                "invalid_attachment",
                f"{field}.content_id: {cid!r} is another attachment's",
                f"{field}.content_id",
            )
        cids.add(cid.lower())
        out.append(mime.Attachment(a.filename, content, a.content_type, cid))
    return out


def _tags_metadata(
    tags: list[str] | None, metadata: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    tags = tags or []
    if len(tags) > MAX_TAGS:
        raise invalid("invalid_tags", f"at most {MAX_TAGS} tags", "tags")
    for i, tag in enumerate(tags):
        if not tag or len(tag) > MAX_TAG_LENGTH or HEADER_CONTROL.search(tag):
            raise invalid(
                "invalid_tags", f"tags[{i}]: 1-{MAX_TAG_LENGTH} printable characters", f"tags[{i}]"
            )
    metadata = metadata or {}
    if len(dumps(metadata)) > MAX_METADATA_BYTES:  # as stored: compact UTF-8
        raise invalid(
            "invalid_metadata", f"metadata: at most {MAX_METADATA_BYTES} bytes of JSON", "metadata"
        )
    return tags, metadata


def _schedule(value: datetime | None, now: float) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ts = value.timestamp()
    if ts - now > MAX_SCHEDULE_AHEAD:
        raise invalid(
            "invalid_scheduled_at", "scheduled_at: at most one year ahead", "scheduled_at"
        )
    return ts if ts > now else None


MISSING_FROM = (
    "from: no sender: give from, set a template's from, create the key with --default-from, "
    "or set [compat] default_from in relay.toml"
)


def default_sender(
    template: TemplateRecord | None, credential: Credential, settings: Settings
) -> str:
    """The sender of a request that names none: the template's ``from``, else the key's
    ``--default-from``, else ``[compat] default_from``; ApiError 400 missing_from if none.

    Every ingress that may lack a sender (the native API, MailSage, MessagePipe) uses this,
    so the order is the same everywhere. The result still passes the domain policy.
    """
    for value in (
        template.from_address if template is not None else "",
        credential.default_from,
        settings.compat.default_from,
    ):
        if value:
            return value
    raise ApiError(400, "missing_from", MISSING_FROM, "from")


def prepare_send(
    req: SendRequest,
    *,
    settings: Settings,
    credential: Credential,
    client_address: str,
    template: TemplateRecord | None,
    template_data: dict[str, Any] | None,
    now: float,
) -> Prepared:
    """Validate one message request and build its MIME; raise ApiError on the first problem."""
    if req.optimize_send_time:
        raise invalid(
            "unsupported_option",
            "optimize_send_time: not supported by this relay; omit it or send false",
            "optimize_send_time",
        )
    if req.provider is not None and not any(p.name == req.provider for p in settings.providers):
        raise ApiError(
            404,
            "provider_not_found",
            f"provider: no provider named {_shown(req.provider)}",
            "provider",
        )
    from_ = req.from_ if req.from_ is not None else default_sender(template, credential, settings)
    sender = parse_mailbox(from_, "from", "invalid_from_address")
    if policy.check_sender(sender.address, credential, settings.domain_names()) is not None:
        domain = sender.address.rpartition("@")[2]
        raise invalid(
            "domain_not_verified",
            f"from: the domain {domain} is not a sending domain of this relay"
            + ("" if credential.domains is None else " for this API key"),
            "from",
        )
    # Counted as given, before any is parsed: 10,000 copies of one address were parsed
    # each, then taken as one recipient, and the To: header listed them all.
    given = 0
    for field, value in (("to", req.to), ("cc", req.cc), ("bcc", req.bcc)):
        given += 0 if value is None else 1 if isinstance(value, str) else len(value)
        if given > settings.smtp.max_recipients:
            raise invalid(
                "too_many_recipients",
                f"to/cc/bcc: at most {settings.smtp.max_recipients} recipients",
                field,
            )
    to = _recipients(req.to, "to")
    if not to:
        raise invalid("invalid_to_address", "to: at least one recipient is required", "to")
    cc = _recipients(req.cc, "cc")
    bcc = _recipients(req.bcc, "bcc")
    envelope: list[str] = []
    seen: set[str] = set()
    for box in (*to, *cc, *bcc):
        if box.address.lower() not in seen:
            seen.add(box.address.lower())
            envelope.append(box.address)

    subject = req.subject if req.subject is not None else (template.subject if template else "")
    html = req.html if req.html is not None else (template.html if template else "")
    text = req.text if req.text is not None else (template.text if template else "")
    if template is not None or template_data is not None:
        try:
            subject, html, text = render_all(subject, html, text, template_data or {})
        except TemplateProblem as exc:
            raise invalid("invalid_template", str(exc), "template_data") from None
    if not subject.strip():
        raise invalid("missing_subject", "subject: required", "subject")
    if HEADER_CONTROL.search(subject):
        raise invalid("invalid_header", "subject: line breaks are not allowed", "subject")
    if not html and not text:
        raise invalid("missing_body", "html or text: at least one is required", "html")

    headers = _headers(req.headers)
    reply_to = None
    if req.reply_to is not None:
        if any(n.lower() == "reply-to" for n, _ in headers):
            raise invalid("invalid_header", "reply_to: also given in headers", "reply_to")
        reply_to = parse_mailbox(req.reply_to, "reply_to", "invalid_reply_to")
    attachments = _attachments(req.attachments)
    tags, metadata = _tags_metadata(req.tags, req.metadata)
    scheduled_at = _schedule(req.scheduled_at, now)

    data = mime.build(
        mime.MessageSpec(
            sender=sender,
            to=to,
            cc=cc,
            subject=subject,
            html=html,
            text=text,
            headers=headers,
            attachments=attachments,
            reply_to=reply_to,
        )
    )
    if len(data) > settings.smtp.max_message_size:
        raise ApiError(
            413,
            "message_too_large",
            f"the message is {len(data)} bytes; at most {settings.smtp.max_message_size} allowed",
        )
    display_to = tuple(b.address for b in to)
    submission = Submission(
        sender=sender.address,
        recipients=tuple(envelope),
        data=data,
        source="http",
        credential=credential,
        client_address=client_address,
        client_helo="",
        protocol="HTTP",
        display_to=display_to,
        tags=tuple(tags),
        metadata=metadata,
        tracking=req.tracking.model_dump(exclude_none=True) if req.tracking else None,
        scheduled_at=scheduled_at,
        provider=req.provider or "",
        attempt_once=req.single_attempt,
        header_info=built_info(subject),
    )
    return Prepared(
        submission=submission,
        sender=sender.address,
        to_repr=display_to[0] if isinstance(req.to, str) else list(display_to),
        subject=subject,
        tags=tags,
        metadata=metadata,
    )

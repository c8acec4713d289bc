"""MailStack's API (``/v1/emails``): one message, a batch of up to 100, and read-back.

Its camelCase fields map onto the native request (``fromName`` joins ``from`` as a display
name, ``tags`` is a comma-separated string). A batch is a job whose items are validated
and accepted one by one. A key over its quota gets 402, MailStack's billing gate.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from mailgate.exceptions import PolicyRefused
from mailgate.ingress.compat.common import (
    Lenient,
    Route,
    accept_job,
    body_of,
    guarded,
    native_request,
    parse,
    prepare,
    template_or_none,
)
from mailgate.ingress.http import ApiContext, json_response
from mailgate.ingress.http_params import iso
from mailgate.models import Accepted, Credential
from mailgate.submission.prepare import ApiError, Prepared

MAX_BATCH = 100
SUPPRESSED = "Recipient is suppressed."
_STATUS = {
    "sent": "Sent",
    "delivered": "Delivered",
    "bounced": "Bounced",
    "failed": "Failed",
    "cancelled": "Cancelled",
}

Addresses = str | list[str]


PREFIX = "/v1/emails"  # every path of the dialect; its 404s and 405s too


def error_shape(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": code}


class EmailIn(Lenient):
    from_: str | None = Field(default=None, alias="from")
    fromName: str | None = Field(default=None, max_length=200)
    to: Addresses | None = None
    cc: Addresses | None = None
    bcc: Addresses | None = None
    replyTo: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    templateId: str | None = Field(default=None, max_length=64)
    variables: dict[str, Any] | None = None
    tags: str | list[str] | None = None


class BatchIn(Lenient):
    emails: list[Any]


def _addresses(value: Addresses | None) -> list[str] | None:
    """A list, or one string of comma-separated addresses (a quoted name may hold one)."""
    if value is None:
        return None
    items = _split_addresses(value) if isinstance(value, str) else value
    return [item.strip() for item in items if item.strip()] or None


def _split_addresses(value: str) -> list[str]:
    """At the commas outside quotes: '"Doe, John" <jd@example.com>, b@x' is two (it was
    three, and '"Doe' a bad address). One pass, whatever the string."""
    items, start, quoted, escaped = [], 0, False, False
    for i, c in enumerate(value):
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append(value[start:i])
            start = i + 1
    items.append(value[start:])
    return items


def _sender(email: EmailIn) -> str | None:
    if email.from_ is None or not email.fromName:
        return email.from_
    name = email.fromName.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{name}" <{email.from_.strip()}>'


def _tags(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return [tag.strip() for tag in items if tag.strip()] or None


def _problem(exc: ApiError | PolicyRefused) -> ApiError:
    err = ApiError.refused(exc) if isinstance(exc, PolicyRefused) else exc
    if err.code == "recipient_suppressed":
        return ApiError(400, err.code, SUPPRESSED, err.field)
    if err.code == "quota_exceeded":
        return ApiError(402, err.code, f"Payment Required: {err.message}", err.field, err.headers)
    return err


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def prepared(request: Request, cred: Credential, obj: Any) -> Prepared:
        email = parse(EmailIn, obj)
        if email.from_ is None:
            raise ApiError(400, "invalid_from_address", "from: required", "from")
        if email.to is None:
            raise ApiError(400, "invalid_to_address", "to: required", "to")
        record = await template_or_none(ctx, email.templateId)
        if email.templateId and record is None:
            raise ApiError(404, "not_found", "Template not found", "templateId")
        req = native_request(
            {
                "from": _sender(email),
                "to": _addresses(email.to),
                "cc": _addresses(email.cc),
                "bcc": _addresses(email.bcc),
                "reply_to": email.replyTo,
                "subject": email.subject,
                "html": email.html,
                "text": email.text,
                "template_id": email.templateId,
                "tags": _tags(email.tags),
            }
        )
        return prepare(ctx, request, cred, req, record, email.variables, now=ctx.clock())

    async def send(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        prep = await prepared(request, cred, await body_of(ctx, request))
        (result,) = await ctx.acceptor.accept_many([prep.submission])
        if isinstance(result, PolicyRefused):
            raise _problem(result)
        return json_response({"id": result.id, "status": "queued"}, 202)

    async def batch(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(BatchIn, await body_of(ctx, request))
        if len(body.emails) > MAX_BATCH:
            raise ApiError(400, "too_many_messages", f"emails: at most {MAX_BATCH} items", "emails")
        items: list[Prepared | ApiError] = []
        for index, obj in enumerate(body.emails):
            try:
                items.append(await prepared(request, cred, obj))
            except ApiError as exc:
                exc.message = f"emails[{index}]: {exc.message}"
                items.append(_problem(exc))
        valid = [p for p in items if isinstance(p, Prepared)]
        job_id, results = await accept_job(ctx, cred, valid, source="mailstack")
        outcome = iter(results)
        out: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            result: Accepted | ApiError | PolicyRefused = (
                item if isinstance(item, ApiError) else next(outcome)
            )
            if isinstance(result, Accepted):
                out.append({"index": index, "id": result.id, "status": "queued"})
            else:
                err = _problem(result)
                out.append({"index": index, "status": "rejected", "error": err.message})
        accepted = sum(1 for o in out if o["status"] == "queued")
        quota_only = all(
            isinstance(r, PolicyRefused) and r.error_code == "quota_exceeded" for r in results
        )
        if valid and len(valid) == len(items) and not accepted and quota_only:
            # With the Retry-After a single send's 402 carries (when the next period starts).
            used_up = "Payment Required: this key's quota is used up"
            raise ApiError(402, "quota_exceeded", used_up, None, _problem(results[0]).headers)
        answer = {"accepted": accepted, "rejected": len(out) - accepted, "results": out}
        if job_id is not None:
            answer["jobId"] = job_id
        return json_response(answer, 202)

    async def get(request: Request) -> Response:
        cred = await ctx.credential(request)
        m = await store.get_message(request.path_params["email_id"])
        readable = m is not None and (
            cred.scope in ("read", "admin") or (m["key_id"] != "" and m["key_id"] == cred.id)
        )
        if m is None or not readable:
            raise ApiError(404, "not_found", "Email not found")
        first = m["deliveries"][0] if m["deliveries"] else {}
        status = _STATUS.get(m["status"], "Queued")
        failed = status in ("Bounced", "Failed")
        display = m["display_to"] or [d["recipient"] for d in m["deliveries"]]
        return json_response(
            {
                "id": m["id"],
                "fromEmail": m["sender"],
                "toEmail": display[0] if display else "",
                "subject": m["subject"],
                "status": status,
                "providerMessageId": first.get("provider_message_id") or None,
                "errorMessage": (first.get("last_response") or None) if failed else None,
                "tags": ",".join(m["tags"] or []) or None,
                "queuedAt": iso(m["created_at"]),
                "sentAt": iso(m["sent_at"] or m["delivered_at"]),
                "createdAt": iso(m["created_at"]),
            }
        )

    return [
        (path, guarded(error_shape, handler), methods)
        for path, handler, methods in (
            (PREFIX, send, ["POST"]),
            (f"{PREFIX}/batch", batch, ["POST"]),
            (f"{PREFIX}/{{email_id}}", get, ["GET"]),
        )
    ]

"""MailSage's API (``/api/v1/emails/...``): send, batch and job control, for its clients.

A send is a job of one, so the ``job_id`` every answer carries can be polled like a
batch's. ``task_id`` is the message's queue id (``/v1/messages/{id}`` reads it);
``tracking_id`` is its Message-ID without the angle brackets. ``body`` is HTML when it
contains markup, else plain text. ``smtp_id`` names a provider of relay.toml.
"""

from __future__ import annotations

import re
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
from mailgate.ingress.http_jobs import control_job, job_body, visible_job
from mailgate.ingress.http_send import prepare_each
from mailgate.models import Accepted
from mailgate.submission.prepare import ApiError, Prepared

MAX_BATCH = 1000
# MailSage's one ``body`` is html when it holds an html tag (or a doctype or comment): any
# <...> made "Write to Support <support@example.com>" or "if a < b and c > d" html, and a
# mail client hid the address and joined the lines.
_TAGS = (
    "html|head|body|title|meta|style|link|div|span|p|br|hr|a|b|i|u|s|em|strong|small|big"
    "|sub|sup|font|center|blockquote|pre|code|tt|h[1-6]|ul|ol|li|dl|dt|dd|table|thead"
    "|tbody|tfoot|tr|td|th|caption|col|colgroup|img|figure|figcaption|section|article"
    "|header|footer|nav|main|mark|abbr|address|button|form|input|label|svg|strike"
)
_MARKUP = re.compile(rf"<(?:!doctype\b|!--|/?(?:{_TAGS})(?=[\s/>])[^<>]*>)", re.IGNORECASE)
# The seed's error codes (its "Error Codes" table), from the native ones.
_CODES = {
    "invalid_to_address": "invalid_recipient",
    "recipient_suppressed": "invalid_recipient",
    "too_many_recipients": "invalid_recipient",
    "invalid_template": "template_error",
    "rate_limit_exceeded": "rate_limit",
    "service_unavailable": "smtp_error",
}


PREFIX = "/api/v1/emails"  # every path of the dialect; its 404s and 405s too


def error_shape(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": _CODES.get(code, code)}


class Recipient(Lenient):
    email: str = Field(max_length=998)
    variables: dict[str, Any] | None = None


class SendIn(Lenient):
    template_id: str | None = Field(default=None, max_length=64)
    recipient: Recipient
    subject: str | None = None
    body: str | None = None
    smtp_id: str | None = Field(default=None, max_length=200)


class BatchIn(Lenient):
    template_id: str | None = Field(default=None, max_length=64)
    recipients: list[Recipient]
    subject: str | None = None
    body: str | None = None
    smtp_id: str | None = Field(default=None, max_length=200)
    campaign_id: str | None = Field(default=None, max_length=200)


class ControlIn(Lenient):
    action: str


def _body_fields(body: str | None) -> dict[str, Any]:
    if body is None:
        return {}
    return {"html": body} if _MARKUP.search(body) else {"text": body}


def _answer(message: str, job_id: str | None, first: Accepted, **extra: Any) -> dict[str, Any]:
    return {
        "message": message,
        "job_id": job_id,
        "task_id": first.id,
        "tracking_id": first.message_id.strip("<>"),
        "status": "queued",
        **extra,
    }


def routes(ctx: ApiContext) -> list[Route]:
    async def template(template_id: str | None) -> Any:
        record = await template_or_none(ctx, template_id)
        if template_id and record is None:
            raise ApiError(404, "not_found", f"Template {template_id} not found")
        return record

    def prepared_for(
        request: Request, cred: Any, shared: dict[str, Any], rcpt: Recipient, record: Any
    ) -> Prepared:
        req = native_request({**shared, "to": rcpt.email})
        return prepare(ctx, request, cred, req, record, rcpt.variables, now=ctx.clock())

    async def commit(
        cred: Any, prepared: list[Prepared], campaign_id: str, *, bulk: bool = True
    ) -> tuple[str | None, list[Accepted]]:
        def check(results: list[Accepted | PolicyRefused]) -> None:
            """All or nothing, before the commit; a suppressed recipient is only left out."""
            for index, result in enumerate(results):
                if isinstance(result, PolicyRefused) and (
                    result.error_code != "recipient_suppressed" or len(results) == 1
                ):
                    err = ApiError.refused(result)
                    if len(results) > 1:
                        err.message = f"recipients[{index}]: {err.message}"
                    raise err

        job_id, results = await accept_job(
            ctx,
            cred,
            prepared,
            source="mailsage",
            campaign_id=campaign_id,
            check=check,
            bulk=bulk,
        )
        accepted = [r for r in results if isinstance(r, Accepted)]
        if not accepted:
            raise ApiError(400, "invalid_recipient", "every recipient is on the suppression list")
        return job_id, accepted

    def shared_fields(body: SendIn | BatchIn) -> dict[str, Any]:
        return {
            "subject": body.subject,
            "template_id": body.template_id,
            "provider": body.smtp_id,
            **_body_fields(body.body),
        }

    async def send(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(SendIn, await body_of(ctx, request))
        record = await template(body.template_id)
        prep = prepared_for(request, cred, shared_fields(body), body.recipient, record)
        # A job of one (so its job_id can be polled), not bulk mail: no List-Unsubscribe.
        job_id, accepted = await commit(cred, [prep], "", bulk=False)
        return json_response(_answer("Email queued successfully", job_id, accepted[0]), 202)

    async def batch(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(BatchIn, await body_of(ctx, request))
        if not body.recipients:
            raise ApiError(400, "invalid_recipient", "recipients: at least one is required")
        if len(body.recipients) > MAX_BATCH:
            raise ApiError(400, "invalid_recipient", f"recipients: at most {MAX_BATCH}")
        record = await template(body.template_id)
        shared = shared_fields(body)
        items = await prepare_each(
            body.recipients,
            "recipients",
            lambda rcpt: prepared_for(request, cred, shared, rcpt, record),
        )
        for item in items:
            if isinstance(item, ApiError):  # MailSage answers per request: all or nothing
                raise item
        prepared = [p for p in items if isinstance(p, Prepared)]
        job_id, accepted = await commit(cred, prepared, body.campaign_id or "")
        answer = _answer(
            "Batch email queued successfully",
            job_id,
            accepted[0],
            recipient_count=sum(len(a.recipients) for a in accepted),
        )
        return json_response(answer, 202)

    async def job(request: Request) -> Response:
        cred = await ctx.credential(request)
        return json_response(job_body(await visible_job(ctx, cred, request.path_params["job_id"])))

    async def control(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        found = await visible_job(ctx, cred, request.path_params["job_id"])
        body = parse(ControlIn, await body_of(ctx, request))
        if body.action not in ("pause", "resume", "stop"):
            raise ApiError(400, "invalid_action", "action: one of pause, resume, stop", "action")
        try:
            after = await control_job(ctx, cred, found, body.action)
        except ApiError as exc:
            if exc.status == 409:  # MailSage has no 409: an action the job cannot take
                exc.status = 400
            raise
        return json_response(job_body(after))

    return [
        (path, guarded(error_shape, handler), methods)
        for path, handler, methods in (
            (f"{PREFIX}/send", send, ["POST"]),
            (f"{PREFIX}/batch", batch, ["POST"]),
            (f"{PREFIX}/jobs/{{job_id}}", job, ["GET"]),
            (f"{PREFIX}/jobs/{{job_id}}/status", job, ["GET"]),
            (f"{PREFIX}/jobs/{{job_id}}/control", control, ["POST"]),
        )
    ]

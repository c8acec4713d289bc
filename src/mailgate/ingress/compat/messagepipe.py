"""MessagePipe's API (``/email/...``): a send that answers with the delivery's outcome,
bulk sends, retries of failed deliveries and queue statistics.

Its messages are sent once: the first attempt decides (every provider in priority order,
as MessagePipe fails over), and a delivery every provider failed is ``failed`` with no
DSN, for the client to ``retry``. A send waits up to ``[compat] send_wait`` for that
attempt and answers 202 "Email queued" if it has not finished by then. POSTs answer 201,
as MessagePipe's (NestJS) server does. ``deliveryLogId`` names one recipient's delivery
(``<message id>.<recipient index>``) and stays valid.
"""

from __future__ import annotations

from http import HTTPStatus
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
    delivery_log_id,
    guarded,
    native_request,
    parse,
    parse_delivery_log_id,
    prepare,
    template_or_none,
)
from mailgate.ingress.http import ApiContext, json_response
from mailgate.ingress.http_send import prepare_each
from mailgate.models import Accepted, Credential
from mailgate.store import TemplateRecord
from mailgate.submission.prepare import ApiError, Prepared

MAX_BULK = 1000
TEMPLATE_NOT_FOUND = "template_not_found"
SENT = ("sent", "delivered")
FAILED = ("failed", "bounced")


PREFIX = "/email"  # every path of the dialect; its 404s and 405s too


def error_shape(status: int, code: str, message: str) -> dict[str, Any]:
    if code == TEMPLATE_NOT_FOUND:
        return {"error": "Template not found", "statusCode": 404}
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return {"message": message, "error": reason, "statusCode": status}


class SendIn(Lenient):
    templateId: str | None = Field(default=None, max_length=64)
    to: str | None = Field(default=None, max_length=998)
    subject: str | None = None
    variables: dict[str, Any] | None = None
    from_: str | None = Field(default=None, alias="from")


class BulkIn(Lenient):
    templateId: str | None = Field(default=None, max_length=64)
    recipients: list[str] | None = None
    subject: str | None = None
    variables: dict[str, Any] | None = None
    from_: str | None = Field(default=None, alias="from")


class RetryIn(Lenient):
    deliveryLogId: str = Field(max_length=80)


class RetryManyIn(Lenient):
    deliveryLogIds: list[str] = Field(max_length=1000)


def _failure_text(events: list[dict[str, Any]], rcpt_idx: int) -> str:
    """Each provider's reply in the delivery's last attempt: "name: reply; name: reply"."""
    mine = [e for e in events if e["rcpt_idx"] == rcpt_idx]
    start = max((i for i, e in enumerate(mine) if e["type"] in ("queued", "retry")), default=0)
    replies = [
        f"{e['provider'] or 'no provider'}: {e['response']}"
        for e in mine[start:]
        if e["type"] in ("failover", "failed", "bounced") and e["response"]
    ]
    return "; ".join(replies) or "no provider accepted the message"


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def template(template_id: str | None) -> TemplateRecord:
        if not template_id:
            raise ApiError(400, "invalid_template", "templateId: required", "templateId")
        record = await template_or_none(ctx, template_id)
        if record is None:
            raise ApiError(404, TEMPLATE_NOT_FOUND, "Template not found", "templateId")
        return record

    def prepared(
        request: Request,
        cred: Credential,
        record: TemplateRecord,
        to: str,
        body: SendIn | BulkIn,
    ) -> Prepared:
        req = native_request(
            {
                "from": body.from_,
                "to": to,
                "subject": body.subject,
                "template_id": record.id,
                "single_attempt": True,
            }
        )
        return prepare(ctx, request, cred, req, record, body.variables or {}, now=ctx.clock())

    async def outcomes(accepted: list[Accepted]) -> dict[str, list[dict[str, Any]]]:
        """Each message's deliveries after their first attempt (or at send_wait)."""
        if ctx.attempts is None:
            return await store.deliveries_of([a.id for a in accepted])
        counts = {a.id: len(a.recipients) for a in accepted}
        return await ctx.attempts.wait(counts, ctx.settings.compat.send_wait)

    async def send(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(SendIn, await body_of(ctx, request))
        if not body.to:
            raise ApiError(400, "invalid_to_address", "to: required", "to")
        record = await template(body.templateId)
        prep = prepared(request, cred, record, body.to, body)
        (result,) = await ctx.acceptor.accept_many([prep.submission])
        if isinstance(result, PolicyRefused):
            raise ApiError.refused(result)
        found = (await outcomes([result])).get(result.id, [])
        first = found[0] if found else {"status": "queued", "rcpt_idx": 0}
        log_id = delivery_log_id(result.id, first["rcpt_idx"])
        if first["status"] in SENT:
            answer = {
                "message": "Email sent successfully",
                "messageId": result.id,
                "provider": first["provider"],
                "deliveryLogId": log_id,
            }
            return json_response(answer, 201)
        if first["status"] in FAILED:
            events = await store.events_of(result.id)
            failure = {
                "message": f"All providers failed: {_failure_text(events, first['rcpt_idx'])}",
                "error": "Internal Server Error",
                "statusCode": 500,
                "deliveryLogId": log_id,
            }
            return json_response(failure, 500)
        queued = {"message": "Email queued", "messageId": result.id, "deliveryLogId": log_id}
        return json_response(queued, 202)

    async def send_bulk(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(BulkIn, await body_of(ctx, request))
        if not body.recipients:
            raise ApiError(400, "invalid_to_address", "recipients: at least one is required")
        if len(body.recipients) > MAX_BULK:
            raise ApiError(400, "too_many_messages", f"recipients: at most {MAX_BULK}")
        record = await template(body.templateId)
        items = await prepare_each(
            body.recipients, "recipients", lambda to: prepared(request, cred, record, to, body)
        )
        valid = [p for p in items if isinstance(p, Prepared)]
        _job_id, results = await accept_job(ctx, cred, valid, source="messagepipe")
        accepted = [r for r in results if isinstance(r, Accepted)]
        found = await outcomes(accepted) if accepted else {}
        outcome = iter(results)
        rows: list[dict[str, Any]] = []
        counts = {"sent": 0, "failed": 0, "queued": 0}
        for to, item in zip(body.recipients, items, strict=True):
            result = item if isinstance(item, ApiError) else next(outcome)
            if not isinstance(result, Accepted):
                err = ApiError.refused(result) if isinstance(result, PolicyRefused) else result
                rows.append({"recipient": to, "success": False, "error": err.message})
                counts["failed"] += 1
                continue
            first = (found.get(result.id) or [{"status": "queued", "rcpt_idx": 0}])[0]
            row: dict[str, Any] = {
                "recipient": to,
                "success": first["status"] not in FAILED,
                "messageId": result.id,
                "provider": first.get("provider") or None,
                "deliveryLogId": delivery_log_id(result.id, first["rcpt_idx"]),
            }
            if first["status"] in SENT:
                counts["sent"] += 1
            elif first["status"] in FAILED:
                counts["failed"] += 1
                row["error"] = first.get("last_response") or "failed"
            else:
                counts["queued"] += 1
                row["status"] = "queued"
            rows.append(row)
        summary = f"Bulk email processed: {counts['sent']} sent, {counts['failed']} failed"
        if counts["queued"]:
            summary += f", {counts['queued']} queued"
        answer = {"message": summary, "success": counts["failed"] == 0, "results": rows}
        return json_response(answer, 201)

    async def retry_one(cred: Credential, log_id: str) -> str | None:
        """Requeue one delivery; None when done, else why not (a client error)."""
        target = parse_delivery_log_id(log_id)
        message = await store.get_message(target[0]) if target is not None else None
        readable = message is not None and (
            cred.scope == "admin" or (message["key_id"] != "" and message["key_id"] == cred.id)
        )
        if target is None or message is None or not readable:
            return "Delivery log not found"
        requeued, suppressed = await store.requeue([target], ctx.clock())
        if requeued:
            return None
        if suppressed:
            return "Recipient is suppressed"
        exists = any(d["rcpt_idx"] == target[1] for d in message["deliveries"])
        return (
            "Only failed or bounced emails can be retried" if exists else ("Delivery log not found")
        )

    async def retry(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(RetryIn, await body_of(ctx, request))
        problem = await retry_one(cred, body.deliveryLogId)
        if problem == "Delivery log not found":
            raise ApiError(404, "not_found", problem, "deliveryLogId")
        if problem is not None:
            raise ApiError(400, "not_retryable", problem, "deliveryLogId")
        ctx.wake()
        return json_response({"message": "Email added to retry queue successfully"}, 201)

    async def retry_many(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        body = parse(RetryManyIn, await body_of(ctx, request))
        results = []
        for log_id in body.deliveryLogIds:
            problem = await retry_one(cred, log_id)
            entry: dict[str, Any] = {"deliveryLogId": log_id, "success": problem is None}
            if problem is not None:
                entry["error"] = problem
            results.append(entry)
        ctx.wake()
        return json_response({"message": "Emails processed for retry", "results": results}, 201)

    async def queue_stats(request: Request) -> Response:
        cred = await ctx.credential(request)
        counts = await store.queue_counts(None if cred.scope in ("read", "admin") else cred.id)
        stats = {
            "pending": sum(counts.get(s, 0) for s in ("scheduled", "queued", "deferred", "held")),
            "processing": counts.get("leased", 0),
            "failed": sum(counts.get(s, 0) for s in (*FAILED, "cancelled")),
            "completed": sum(counts.get(s, 0) for s in SENT),
        }
        return json_response(stats)

    return [
        (path, guarded(error_shape, handler), methods)
        for path, handler, methods in (
            (f"{PREFIX}/send", send, ["POST"]),
            (f"{PREFIX}/send-bulk", send_bulk, ["POST"]),
            (f"{PREFIX}/retry", retry, ["POST"]),
            (f"{PREFIX}/retry-multiple", retry_many, ["POST"]),
            (f"{PREFIX}/queue-stats", queue_stats, ["GET"]),
        )
    ]

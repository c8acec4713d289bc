"""``/v1/messages``: send, batch, read back, events, scheduling (MailingAPI's shapes)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.events.names import api_name
from mailgate.exceptions import DuplicateEntry, PolicyRefused
from mailgate.ingress.http import ApiContext, json_response, parse_model, request_hash
from mailgate.ingress.http_models import BatchMessage, BatchRequest, SendRequest
from mailgate.ingress.http_validation import ApiError, Prepared, invalid, prepare_send
from mailgate.jobs import accept_job
from mailgate.logs import fields, recipient_domain
from mailgate.models import Accepted, Credential, DeliveryStatus
from mailgate.store import IdempotentAnswer, TemplateRecord
from mailgate.text import storable

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = 24 * 3600.0
MAX_BATCH = 1000
# "pending" is the seed's "created, not yet queued": mail here is queued at the commit
# that creates it, so the filter is accepted and matches nothing.
STATUSES = ("pending", *(status.value for status in DeliveryStatus))

Route = tuple[str, Callable[[Request], Awaitable[Response]], list[str]]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("invalid_parameter", f"{name}: not an ISO 8601 date-time", name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
        raise invalid("invalid_parameter", f"{name}: an integer from {low} to {high}", name)
    return int(raw)


def limit_param(request: Request, default: int, high: int) -> int:
    """A list's ``limit``: a positive integer, clamped to ``high`` (the seed says "max",
    so a larger page size is served at the maximum, not refused)."""
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise invalid("invalid_parameter", "limit: a positive integer", "limit")
    return min(int(raw), high)


def _to_repr(addresses: list[str]) -> str | list[str]:
    return addresses[0] if len(addresses) == 1 else addresses


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "message_id": m["message_id_header"],
        "from": m["sender"],
        "to": _to_repr(m["display_to"] or [d["recipient"] for d in m.get("deliveries", [])]),
        "subject": m["subject"],
        "status": m["status"],
        "tags": m["tags"] or [],
        "metadata": m["metadata"] or {},
        "created_at": iso(m["created_at"]),
    }


def _bounce_category(delivery: dict[str, Any]) -> dict[str, str]:
    """``bounce_category`` for a recipient whose delivery bounced, failed or is deferred."""
    if delivery["status"] in ("bounced", "deferred", "failed") and delivery["bounce_category"]:
        return {"bounce_category": delivery["bounce_category"]}
    return {}


def _event_metadata(e: dict[str, Any]) -> dict[str, Any]:
    """What an event carries besides its type and time: provider, reply, bounce category,
    and for opens and clicks the user agent, IP and url (only the ones it has)."""
    meta: dict[str, Any] = {}
    for key in ("provider", "response", "detail", "category"):
        if e.get(key):
            meta[key] = e[key]
    data = e.get("data") or {}
    for key in ("user_agent", "ip", "url"):
        if data.get(key):
            meta[key] = data[key]
    return meta


def _can_read(cred: Credential, message: dict[str, Any]) -> bool:
    return cred.scope in ("read", "admin") or (
        message["key_id"] != "" and message["key_id"] == cred.id
    )


def _sent_body(prep: Prepared, acc: Accepted) -> dict[str, Any]:
    data = {
        "id": acc.id,
        "message_id": acc.message_id,
        "from": prep.sender,
        "to": prep.to_repr,
        "subject": prep.subject,
        "status": "scheduled" if acc.scheduled else "queued",
        "tags": prep.tags,
        "metadata": prep.metadata,
        "created_at": iso(acc.created_at),
    }
    if acc.scheduled and prep.submission.scheduled_at is not None:
        data["scheduled_at"] = iso(prep.submission.scheduled_at)
    if acc.suppressed:
        data["suppressed"] = list(acc.suppressed)  # left out: on the suppression list
    return data


async def active_template(
    ctx: ApiContext, template_id: str | None, field: str
) -> TemplateRecord | None:
    """The template a request names (None if it names none); 422 if missing or inactive."""
    if template_id is None:
        return None
    record = await ctx.store.templates.get(template_id)
    if record is None or not record.active:
        raise invalid("invalid_template", f"{field}: template not found or inactive", field)
    return record


async def prepare_native(
    ctx: ApiContext, request: Request, cred: Credential, req: SendRequest
) -> Prepared:
    """A native send request validated and built, as send (and analyze) see it."""
    return prepare_send(
        req,
        settings=ctx.settings,
        credential=cred,
        client_address=request.client.host if request.client else "",
        template=await active_template(ctx, req.template_id, "template_id"),
        template_data=req.template_data,
        now=ctx.clock(),
    )


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def idempotent(
        request: Request,
        cred: Credential,
        obj: Any,
        run: Callable[[IdempotentAnswerFactory | None], Awaitable[Response]],
    ) -> Response:
        """Serve a stored answer for a repeated Idempotency-Key, or run and store it."""
        idem_key = request.headers.get("idempotency-key")
        if not idem_key:
            return await run(None)
        if len(idem_key) > 255:
            raise invalid(
                "invalid_idempotency_key", "Idempotency-Key: at most 255 characters", None
            )
        digest = request_hash(request.url.path, obj)
        for _ in range(2):
            stored = await store.idempotent_answer(
                cred.id, idem_key, ctx.clock() - IDEMPOTENCY_WINDOW
            )
            if stored is not None:
                if stored.request_hash != digest:
                    raise ApiError(
                        409,
                        "idempotency_conflict",
                        "this Idempotency-Key was used with a different request",
                    )
                return Response(
                    stored.body,
                    status_code=stored.status_code,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )

            def factory(status: int, body: dict[str, Any]) -> IdempotentAnswer:
                return IdempotentAnswer(cred.id, idem_key, digest, status, json.dumps(body))

            try:
                return await run(factory)
            except DuplicateEntry:
                # Taken by a concurrent request (read it back), or by an expired one (purge).
                if (
                    await store.idempotent_answer(
                        cred.id, idem_key, ctx.clock() - IDEMPOTENCY_WINDOW
                    )
                    is None
                ):
                    await store.purge_idempotency(ctx.clock() - IDEMPOTENCY_WINDOW)
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key is in use; retry")

    async def send(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        obj = await ctx.read_json(request)

        async def run(factory: IdempotentAnswerFactory | None) -> Response:
            req = parse_model(SendRequest, obj)
            prep = await prepare_native(ctx, request, cred, req)

            def answer(results: list[Accepted | PolicyRefused]) -> IdempotentAnswer | None:
                if factory is None or not isinstance(results[0], Accepted):
                    return None
                return factory(202, {"data": _sent_body(prep, results[0])})

            (result,) = await ctx.acceptor.accept_many([prep.submission], answer=answer)
            if isinstance(result, PolicyRefused):
                raise ApiError.refused(result)
            log.info(
                "queued %s via HTTP key=%s rcpts=%d",
                result.id,
                cred.name,
                len(result.recipients),
                extra=fields(
                    event="queued",
                    message_id=result.id,
                    source="http",
                    recipient_domains=sorted({recipient_domain(r) for r in result.recipients}),
                    recipients=len(result.recipients),
                    key=cred.name,
                ),
            )
            return json_response({"data": _sent_body(prep, result)}, 202)

        return await idempotent(request, cred, obj, run)

    async def batch(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        obj = await ctx.read_json(request)

        async def run(factory: IdempotentAnswerFactory | None) -> Response:
            if not isinstance(obj, dict):
                raise invalid("invalid_request", "the body must be a JSON object", None)
            items = obj.get("messages")
            base = parse_model(BatchRequest, {k: v for k, v in obj.items() if k != "messages"})
            if base.campaign_id and base.campaign_id != storable(base.campaign_id):
                raise invalid("invalid_parameter", "campaign_id: control characters", "campaign_id")
            if (items is None) == (base.recipient_variables is None):
                raise invalid(
                    "invalid_request",
                    "give either recipient_variables or messages (not both)",
                    "messages",
                )
            now = ctx.clock()
            client = request.client.host if request.client else ""
            requests: list[tuple[SendRequest | None, ApiError | None, dict[str, Any] | None]] = []
            if base.recipient_variables is not None:
                entries = list(base.recipient_variables.items())
                if len(entries) > MAX_BATCH:
                    raise invalid(
                        "too_many_messages",
                        f"at most {MAX_BATCH} recipients",
                        "recipient_variables",
                    )
                shared = base.model_dump(
                    by_alias=True,
                    exclude_none=True,
                    exclude={"recipient_variables", "campaign_id"},
                )
                for address, variables in entries:
                    try:
                        req = parse_model(SendRequest, {**shared, "to": address})
                        requests.append((req, None, variables))
                    except ApiError as exc:
                        requests.append((None, exc, None))
            else:
                if not isinstance(items, list):
                    raise invalid("invalid_request", "messages: must be a list", "messages")
                if len(items) > MAX_BATCH:
                    raise invalid("too_many_messages", f"at most {MAX_BATCH} messages", "messages")
                for i, item in enumerate(items):
                    try:
                        req = parse_model(BatchMessage, item, prefix=f"messages[{i}].")
                        requests.append((req, None, req.template_data))
                    except ApiError as exc:
                        requests.append((None, exc, None))

            # Templates are looked up first (I/O), once per batch; a missing one fails
            # only the messages that use it.
            templates: dict[str, TemplateRecord | ApiError] = {}
            for req, _error, _variables in requests:
                if req is not None and req.template_id and req.template_id not in templates:
                    try:
                        templates[req.template_id] = await active_template(
                            ctx, req.template_id, "template_id"
                        )
                    except ApiError as exc:
                        templates[req.template_id] = exc

            def prepare_all() -> list[Prepared | ApiError]:
                out: list[Prepared | ApiError] = []
                for req, error, variables in requests:
                    if req is None:
                        assert error is not None
                        out.append(error)
                        continue
                    template = templates.get(req.template_id) if req.template_id else None
                    if isinstance(template, ApiError):
                        out.append(template)
                        continue
                    try:
                        out.append(
                            prepare_send(
                                req,
                                settings=ctx.settings,
                                credential=cred,
                                client_address=client,
                                template=template,
                                template_data=variables,
                                now=now,
                            )
                        )
                    except ApiError as exc:
                        out.append(exc)
                return out

            # Validating and building up to 1000 messages is CPU work: in a thread, the
            # event loop keeps serving SMTP sessions and other requests meanwhile.
            prepared = await asyncio.to_thread(prepare_all)
            valid = [p for p in prepared if isinstance(p, Prepared)]

            def assemble(results: list[Accepted | PolicyRefused]) -> dict[str, Any]:
                it = iter(results)
                out: list[dict[str, Any]] = []
                for index, p in enumerate(prepared):
                    if isinstance(p, ApiError):
                        out.append(
                            {"index": index, "status": "rejected", "error": p.body()["error"]}
                        )
                        continue
                    r = next(it)
                    if isinstance(r, PolicyRefused):
                        err = ApiError.refused(r)
                        out.append(
                            {
                                "index": index,
                                "status": "rejected",
                                "to": p.to_repr,
                                "error": err.body()["error"],
                            }
                        )
                    else:
                        out.append(
                            {
                                "index": index,
                                "status": "scheduled" if r.scheduled else "queued",
                                "id": r.id,
                                "to": p.to_repr,
                            }
                        )
                queued = sum(1 for o in out if o["status"] != "rejected")
                return {
                    "data": {
                        "total": len(out),
                        "queued": queued,
                        "errors": len(out) - queued,
                        "messages": out,
                    }
                }

            body: dict[str, Any] = {}

            def answer(
                job_id: str | None, results: list[Accepted | PolicyRefused]
            ) -> IdempotentAnswer | None:
                body.update(assemble(results))
                body["data"]["job_id"] = job_id
                return factory(202, body) if factory is not None else None

            # Every batch is a job (mailgate.jobs): created with its messages, or none.
            job_id, _ = await accept_job(
                ctx.acceptor,
                [p.submission for p in valid],
                key_id=cred.id,
                source="http",
                campaign_id=base.campaign_id or "",
                answer=answer,
            )
            log.info(
                "batch via HTTP key=%s job=%s total=%d queued=%d",
                cred.name,
                job_id,
                body["data"]["total"],
                body["data"]["queued"],
            )
            return json_response(body, 202)

        return await idempotent(request, cred, obj, run)

    async def visible(request: Request, cred: Credential) -> dict[str, Any]:
        message = await store.get_message(request.path_params["message_id"])
        if message is None or not _can_read(cred, message):
            raise ApiError(404, "not_found", "no such message")
        return message

    async def get_message(request: Request) -> Response:
        cred = await ctx.credential(request)
        m = await visible(request, cred)
        data = _summary(m)
        data.update(
            {
                "sent_at": iso(m["sent_at"]),
                "delivered_at": iso(m["delivered_at"]),
                "opened_at": iso(m["opened_at"]),
                "scheduled_at": iso(m["scheduled_at"]),
                "recipients": [
                    {
                        "email": d["recipient"],
                        "status": d["status"],
                        "attempts": d["attempts"],
                        "last_response": d["last_response"],
                        "provider": d["provider"],
                        "provider_message_id": d["provider_message_id"] or "",
                        "updated_at": iso(d["updated_at"]),
                        **_bounce_category(d),
                    }
                    for d in m["deliveries"]
                ],
            }
        )
        return json_response({"data": data})

    async def list_messages(request: Request) -> Response:
        cred = await ctx.credential(request)
        q = request.query_params
        limit = limit_param(request, 50, 100)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        status = q.get("status") or None
        if status is not None and status not in STATUSES:
            raise invalid("invalid_parameter", f"status: one of {', '.join(STATUSES)}", "status")
        rows, total = await store.list_messages(  # type: ignore[misc]
            limit=limit,
            offset=offset,
            status=status,
            to=q.get("to") or None,
            since=_parse_time(q.get("since"), "since"),
            until=_parse_time(q.get("until"), "until"),
            key_id=None if cred.scope in ("read", "admin") else cred.id,
            with_total=True,
        )
        data = [_summary(m) for m in rows]
        meta = {
            "count": len(data),
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(data) < total,
        }
        return json_response({"data": data, "meta": meta})

    async def events(request: Request) -> Response:
        cred = await ctx.credential(request)
        m = await visible(request, cred)
        rows = await store.events_of(m["id"])
        data = [
            {
                "id": f"evt_{e['id']}",
                "type": api_name(e["type"]),
                "timestamp": iso(e["at"]),
                "recipient": e["recipient"],
                "metadata": _event_metadata(e),
            }
            for e in rows
        ]
        return json_response({"data": data})

    async def scheduled(request: Request) -> Response:
        cred = await ctx.credential(request)
        limit = limit_param(request, 100, 1000)
        rows = await store.list_scheduled(
            key_id=None if cred.scope in ("read", "admin") else cred.id, limit=limit
        )
        data = [
            {
                "id": m["id"],
                "to": _to_repr(m["display_to"] or []),
                "subject": m["subject"],
                "scheduled_at": iso(m["scheduled_at"]),
                "status": m["status"],
            }
            for m in rows
        ]
        return json_response({"data": data})

    async def cancel(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        m = await visible(request, cred)
        if not await store.cancel_scheduled(m["id"], ctx.clock()):
            raise ApiError(
                409,
                "not_scheduled",
                f"message is {m['status']}: only a scheduled message that has not gone out "
                "can be cancelled",
            )
        return json_response(
            {"data": {"id": m["id"], "status": "cancelled", "created_at": iso(m["created_at"])}}
        )

    return [
        ("/v1/messages/send", send, ["POST"]),
        ("/v1/messages/batch", batch, ["POST"]),
        ("/v1/messages/scheduled", scheduled, ["GET"]),
        ("/v1/messages", list_messages, ["GET"]),
        ("/v1/messages/{message_id}", get_message, ["GET"]),
        ("/v1/messages/{message_id}/events", events, ["GET"]),
        ("/v1/messages/{message_id}/schedule", cancel, ["DELETE"]),
    ]


IdempotentAnswerFactory = Callable[[int, dict[str, Any]], IdempotentAnswer]

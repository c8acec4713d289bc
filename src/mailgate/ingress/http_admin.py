"""``/v1/admin/...``: the operator's queue tooling, provider health and queue statistics
over HTTP (admin keys only), the equal of ``mailgate queue``.

The queue actions are the store's (QueueFilter, Store.operate and Store.bounce), so the
CLI and the API act on the same rows the same way. Provider health lives in the delivery
process and is asked of it: the answer is the node's that serves the request.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.ingress.http import ApiContext, json_response, parse_model
from mailgate.ingress.http_admin_models import QUEUE_ACTIONS, QueueSelection
from mailgate.ingress.http_params import Route, int_param, iso
from mailgate.models import DeliveryStatus
from mailgate.store import QueueFilter
from mailgate.store.operator import RATE_EVENTS, RATE_WINDOWS
from mailgate.store.statements import PENDING
from mailgate.submission.prepare import ApiError, error_body, invalid
from mailgate.units import parse_duration
from mailgate.workers import WorkerUnavailable

MAX_LIST = 1000
STATUSES = tuple(s.value for s in DeliveryStatus)
# The store's event names -> the names the stats answer with.
RATE_NAMES = {"queued": "accepted"}
WINDOW_NAMES = {60: "1m", 300: "5m", 900: "15m"}


def _older_than(value: str, now: float, field: str) -> float | None:
    if not value:
        return None
    try:
        return now - parse_duration(value)
    except ValueError as exc:
        raise invalid("invalid_parameter", f"{field}: {exc}", field) from None


def _statuses(raw: str | None) -> tuple[str, ...]:
    """``status``: comma-separated; "pending" (the default) or "all" stand for groups."""
    out: list[str] = []
    for part in (raw or "pending").split(","):
        name = part.strip().lower()
        if name == "pending":
            out.extend(PENDING)
        elif name == "all":
            out.extend(STATUSES)
        elif name in STATUSES:
            out.append(name)
        else:
            raise invalid(
                "invalid_parameter",
                f"status: one or more of pending, all, {', '.join(STATUSES)}",
                "status",
            )
    return tuple(dict.fromkeys(out))


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": row["message_id"],
        "rcpt_idx": row["rcpt_idx"],
        "recipient": row["recipient"],
        "sender": row["sender"],
        "subject": row["subject"],
        "status": row["status"],
        "attempts": row["attempts"],
        "created_at": iso(row["created_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]),
        "updated_at": iso(row["updated_at"]),
        "provider": row["provider"] or None,
        "pinned_provider": row["pinned_provider"] or None,
        "last_response": row["last_response"] or None,
        "in_flight": row["lease_owner"] is not None,
    }


def _provider_body(p: dict[str, Any]) -> dict[str, Any]:
    return {
        **p,
        "last_success_at": iso(p["last_success_at"]),
        "last_error_at": iso(p["last_error_at"]),
    }


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store
    node = ctx.settings.server.node_id

    async def admin(request: Request) -> None:
        await ctx.credential(request, need="admin")

    async def queue_list(request: Request) -> Response:
        await admin(request)
        q = request.query_params
        limit = int_param(request, "limit", 100, 1, MAX_LIST)
        offset = int_param(request, "offset", 0, 0, 10**9)
        ids = [i.strip() for i in q.get("ids", "").split(",") if i.strip()]
        selection = QueueFilter(
            message_ids=ids,
            recipient=q.get("to", ""),
            sender=q.get("from", ""),
            provider=q.get("provider", ""),
            created_before=_older_than(q.get("older_than", ""), ctx.clock(), "older_than"),
        )
        rows = await store.queue_list(
            selection, _statuses(q.get("status")), limit=limit, offset=offset
        )
        data = [_entry(r) for r in rows]
        return json_response(
            {"data": data, "meta": {"limit": limit, "offset": offset, "count": len(data)}}
        )

    async def queue_action(request: Request) -> Response:
        await admin(request)
        action = request.path_params["action"]
        if action not in QUEUE_ACTIONS:
            raise ApiError(
                404, "not_found", f"no queue action {action!r}: one of {', '.join(QUEUE_ACTIONS)}"
            )
        obj = await ctx.read_json(request)
        body = parse_model(QueueSelection, obj)
        now = ctx.clock()
        given = body.ids or body.to or body.from_ or body.provider or body.older_than
        if not (given or body.all):
            raise invalid(
                "empty_selection",
                "name ids, to, from, provider or older_than, or set all to true",
                "all",
            )
        selection = QueueFilter(
            message_ids=body.ids,
            recipient=body.to,
            sender=body.from_,
            provider=body.provider,
            created_before=_older_than(body.older_than, now, "older_than"),
        )
        dsns: list[str] = []
        extra: dict[str, Any] = {}
        if action == "requeue":
            again = await store.requeue_matching(selection, now)
            changed, messages = len(again.requeued), again.messages
            extra["suppressed"] = len(again.suppressed)
        elif action == "bounce":
            from mailgate.delivery.operator_bounce import dsn_builder, reply_line

            build = dsn_builder(ctx.settings.server.hostname)
            done = await store.bounce(selection, now, reply_line(body.reason), build)
            changed, messages, dsns = done.deliveries, done.messages, done.dsns
        else:
            changed, messages = await store.operate(action, selection, now)
        if changed and action in ("retry", "release", "bounce", "requeue"):
            ctx.wake()  # due now (bounce: its DSNs are)
        result = {
            "action": action,
            "deliveries": changed,
            "messages": messages,
            "dsns": dsns,
            **extra,
        }
        return json_response({"data": result})

    async def providers(request: Request) -> Response:
        await admin(request)
        if ctx.providers is None:
            data = [
                {
                    "name": p.name,
                    "node": node,
                    "kind": p.kind,
                    "priority": p.priority,
                    "breaker": None,
                    "connections_in_use": None,
                    "max_connections": p.max_connections,
                    "rate_limit": p.rate or None,
                    "rate": None,
                    "last_success_at": None,
                    "last_error_at": None,
                    "last_error": None,
                }
                for p in ctx.settings.providers
            ]
            return json_response({"node": node, "delivery": "disabled", "data": data})
        try:
            found = await ctx.providers()
        except WorkerUnavailable:
            return json_response(
                error_body("service_unavailable", "the delivery process is not running; retry"),
                503,
                {"Retry-After": "5"},
            )
        body = {"node": node, "delivery": "running", "data": [_provider_body(p) for p in found]}
        return json_response(body)

    async def stats(request: Request) -> Response:
        await admin(request)
        now = ctx.clock()
        counted = await store.event_rates(now)
        rates = {
            RATE_NAMES.get(t, t): {
                WINDOW_NAMES[w]: {"count": counted[t][w], "per_second": round(counted[t][w] / w, 3)}
                for w in RATE_WINDOWS
            }
            for t in RATE_EVENTS
        }
        depth = dict.fromkeys(STATUSES, 0)
        depth.update(await store.status_counts())
        oldest = await store.oldest_pending_created_at()
        body = {
            "node": node,
            "at": iso(now),
            "rates": rates,
            "depth": depth,
            "oldest_pending": None
            if oldest is None
            else {"created_at": iso(oldest), "age_seconds": round(max(0.0, now - oldest), 3)},
        }
        return json_response({"data": body})

    return [
        ("/v1/admin/queue", queue_list, ["GET"]),
        ("/v1/admin/queue/{action}", queue_action, ["POST"]),
        ("/v1/admin/providers", providers, ["GET"]),
        ("/v1/admin/stats", stats, ["GET"]),
    ]

"""``/v1/messages`` read back: a message with its recipients, lists, events, scheduled
mail and cancelling it (MailingAPI's shapes). Sends are in http_send."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.events.names import api_name
from mailgate.ingress.http import ApiContext, json_response
from mailgate.ingress.http_params import (
    Route,
    int_param,
    iso,
    limit_param,
    page_meta,
    parse_time,
)
from mailgate.models import Credential, DeliveryStatus
from mailgate.submission.prepare import ApiError, invalid

# "pending" is the seed's "created, not yet queued": mail here is queued at the commit
# that creates it, so the filter is accepted and matches nothing.
STATUSES = ("pending", *(status.value for status in DeliveryStatus))


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


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

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
        offset = int_param(request, "offset", 0, 0, 10**9)
        status = q.get("status") or None
        if status is not None and status not in STATUSES:
            raise invalid("invalid_parameter", f"status: one of {', '.join(STATUSES)}", "status")
        rows, total = await store.list_messages(  # type: ignore[misc]
            limit=limit,
            offset=offset,
            status=status,
            to=q.get("to") or None,
            since=parse_time(q.get("since"), "since"),
            until=parse_time(q.get("until"), "until"),
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
        offset = int_param(request, "offset", 0, 0, 10**9)
        rows = await store.list_scheduled(
            key_id=None if cred.scope in ("read", "admin") else cred.id,
            limit=limit + 1,  # one more: whether there is a next page
            offset=offset,
        )
        more = len(rows) > limit
        rows = rows[:limit]
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
        return json_response({"data": data, "meta": page_meta(len(data), limit, offset, more)})

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
        ("/v1/messages/scheduled", scheduled, ["GET"]),
        ("/v1/messages", list_messages, ["GET"]),
        ("/v1/messages/{message_id}", get_message, ["GET"]),
        ("/v1/messages/{message_id}/events", events, ["GET"]),
        ("/v1/messages/{message_id}/schedule", cancel, ["DELETE"]),
    ]

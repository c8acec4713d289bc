"""``/v1/webhooks``: endpoints that receive the events (admin keys only).

The secret is shown once, when an endpoint is made or its secret rotated. Endpoints from
relay.toml are listed too (``source: "config"``); they change in the file, except that an
operator may enable one again here after a 410 disabled it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.events.ssrf import UrlRefused, check_url
from mailgate.events.webhook_signing import new_secret
from mailgate.events.webhook_types import subscription
from mailgate.ingress.http import ApiContext, json_response, parse_model
from mailgate.ingress.http_params import Route, iso, limit_param
from mailgate.ingress.http_webhook_models import ReplayIn, WebhookIn, WebhookUpdate
from mailgate.store.webhooks import NOT_IN_CONFIG, Endpoint, WebhookDelivery
from mailgate.submission.prepare import ApiError, invalid

DELIVERY_STATUSES = ("pending", "succeeded", "failed")


def endpoint_body(e: Endpoint, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "description": e.description,
        "source": e.source,
        "enabled": e.disabled_at is None,
        "disabled_at": iso(e.disabled_at),
        "disabled_reason": e.disabled_reason or None,
        "created_at": iso(e.created_at),
        "updated_at": iso(e.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_body(w: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": f"msg_{w.id}",
        "endpoint_id": w.endpoint_id,
        "event_type": w.event_type,
        "status": w.status,
        "attempts": w.attempts,
        "next_attempt_at": iso(w.next_attempt_at),
        "last_status": w.last_status,
        "last_error": w.last_error or None,
        "created_at": iso(w.created_at),
        "updated_at": iso(w.updated_at),
    }


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def admin(request: Request) -> None:
        await ctx.credential(request, need="admin")

    async def checked_url(url: str) -> str:
        try:
            # Resolving may block: not on the event loop. The setting as it is now: a
            # reload may have changed it since the routes were made.
            allow_private = ctx.settings.webhooks.allow_private
            await asyncio.to_thread(check_url, url, allow_private=allow_private)
        except UrlRefused as exc:
            raise invalid("invalid_url", f"url: {exc}", "url") from None
        return url

    def checked_events(events: list[str]) -> list[str]:
        try:
            return subscription(events)
        except ValueError as exc:
            raise invalid("invalid_events", f"events: {exc}", "events") from None

    async def found(request: Request) -> Endpoint:
        endpoint = await store.webhooks.endpoint(request.path_params["webhook_id"])
        if endpoint is None:
            raise ApiError(404, "not_found", "no such webhook endpoint")
        return endpoint

    def changed() -> None:
        if ctx.webhooks is not None:
            ctx.webhooks.endpoints_changed()

    async def list_endpoints(request: Request) -> Response:
        await admin(request)
        return json_response({"data": [endpoint_body(e) for e in await store.webhooks.endpoints()]})

    async def create(request: Request) -> Response:
        await admin(request)
        obj = await ctx.read_json(request)
        body = parse_model(WebhookIn, obj)
        now = ctx.clock()
        secret = new_secret()
        row = {
            "id": "wh_" + secrets.token_hex(12),
            "url": await checked_url(body.url),
            "events": checked_events(body.events),
            "secret": secret,
            "description": body.description,
            "source": "api",
            "created_at": now,
            "updated_at": now,
        }
        await store.webhooks.create(row)
        changed()
        endpoint = await store.webhooks.endpoint(row["id"])
        assert endpoint is not None
        return json_response({"data": endpoint_body(endpoint, secret)}, 201)

    async def get(request: Request) -> Response:
        await admin(request)
        return json_response({"data": endpoint_body(await found(request))})

    async def patch(request: Request) -> Response:
        await admin(request)
        endpoint = await found(request)
        obj = await ctx.read_json(request)
        body = parse_model(WebhookUpdate, obj)
        values: dict[str, Any] = {}
        if body.url is not None:
            values["url"] = await checked_url(body.url)
        if body.events is not None:
            values["events"] = checked_events(body.events)
        if body.description is not None:
            values["description"] = body.description
        if endpoint.source == "config" and values:
            raise ApiError(
                409,
                "managed_by_config",
                "this endpoint comes from relay.toml: change it there (only enabled can be "
                "set here)",
            )
        if body.enabled is not None:
            values["enabled"] = body.enabled
        if not await store.webhooks.change(endpoint.id, values, ctx.clock()):
            raise ApiError(404, "not_found", "no such webhook endpoint")
        changed()
        return json_response({"data": endpoint_body(await found(request))})

    async def delete(request: Request) -> Response:
        await admin(request)
        endpoint = await found(request)
        # A configured endpoint goes once a node's relay.toml lacks it (it is disabled then):
        # while it is in the file, a node's start or reload would only bring it back.
        if endpoint.source == "config" and not endpoint.disabled_reason.startswith(NOT_IN_CONFIG):
            raise ApiError(
                409, "managed_by_config", "this endpoint comes from relay.toml: remove it there"
            )
        await store.webhooks.remove(endpoint.id)
        changed()
        return Response(status_code=204)

    async def rotate(request: Request) -> Response:
        await admin(request)
        endpoint = await found(request)
        if endpoint.source == "config":
            raise ApiError(
                409,
                "managed_by_config",
                "this endpoint comes from relay.toml: change its secret there",
            )
        now = ctx.clock()
        secret = new_secret()
        values = {
            "secret": secret,
            "previous_secret": endpoint.secret,
            "previous_until": now + ctx.settings.webhooks.rotation_overlap,
        }
        await store.webhooks.change(endpoint.id, values, now)
        changed()
        return json_response({"data": endpoint_body(await found(request), secret)})

    async def deliveries(request: Request) -> Response:
        await admin(request)
        endpoint = await found(request)
        status = request.query_params.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            raise invalid(
                "invalid_parameter", f"status: one of {', '.join(DELIVERY_STATUSES)}", "status"
            )
        limit = limit_param(request, 50, 100)
        before_text = request.query_params.get("before") or None
        before = None
        if before_text is not None:
            digits = before_text.removeprefix("msg_")
            if not digits.isdigit():
                raise invalid("invalid_parameter", "before: a delivery id (msg_N)", "before")
            before = int(digits)
        rows = await store.webhooks.deliveries(
            endpoint.id, status=status, limit=limit, before=before
        )
        meta = {
            "count": len(rows),
            "next_before": f"msg_{rows[-1].id}" if len(rows) == limit else None,
        }
        return json_response({"data": [delivery_body(w) for w in rows], "meta": meta})

    async def replay(request: Request) -> Response:
        await admin(request)
        endpoint = await found(request)
        obj = await ctx.read_json(request)
        body = parse_model(ReplayIn, obj)
        wrong = sorted(set(body.status) - set(DELIVERY_STATUSES))
        if wrong:
            raise invalid(
                "invalid_parameter", f"status: each one of {', '.join(DELIVERY_STATUSES)}", "status"
            )
        since = body.since
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        count = await store.webhooks.replay(
            since.timestamp(), ctx.clock(), endpoint_id=endpoint.id, statuses=body.status
        )
        if ctx.webhooks is not None:
            ctx.webhooks.wake()
        return json_response({"data": {"replayed": count}})

    return [
        ("/v1/webhooks", list_endpoints, ["GET"]),
        ("/v1/webhooks", create, ["POST"]),
        ("/v1/webhooks/{webhook_id}", get, ["GET"]),
        ("/v1/webhooks/{webhook_id}", patch, ["PATCH"]),
        ("/v1/webhooks/{webhook_id}", delete, ["DELETE"]),
        ("/v1/webhooks/{webhook_id}/rotate", rotate, ["POST"]),
        ("/v1/webhooks/{webhook_id}/deliveries", deliveries, ["GET"]),
        ("/v1/webhooks/{webhook_id}/replay", replay, ["POST"]),
    ]

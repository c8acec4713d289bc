"""Webhooks: each endpoint with its failed deliveries, and replay (one delivery, or all of
an endpoint's failures over a period) through the webhook store's replay, the one
``mailgate webhooks replay`` and POST /v1/webhooks/{id}/replay use. Endpoints are made,
changed (url, events, description, enabled) and deleted with /v1/webhooks's checks (the
SSRF check of the url, the event types) and store calls; the secret is shown once, in the
answer to the create. Endpoints from relay.toml can only be disabled and enabled here."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.events.ssrf import UrlRefused, check_url
from mailgate.events.webhook_signing import new_secret
from mailgate.events.webhook_types import EVENT_TYPES, subscription
from mailgate.store.webhooks import Endpoint
from mailgate.ui.web import Page, UiContext, UiError, done, render

MAX_URL = 2000  # as WebhookIn
MAX_DESCRIPTION = 500

FAILED_SHOWN = 20
# Replay periods offered for an endpoint's failures, in seconds.
PERIODS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


async def _found(ui: UiContext, endpoint_id: str) -> Endpoint:
    endpoint = await ui.api.store.webhooks.endpoint(endpoint_id)
    if endpoint is None:
        raise UiError(404, "No such webhook endpoint: it may have been deleted.")
    return endpoint


async def _url(ui: UiContext, form: dict[str, str]) -> str:
    url = form.get("url", "").strip()
    if not url or len(url) > MAX_URL:
        raise UiError(422, f"url: 1 to {MAX_URL} characters.")
    try:
        # Resolving may block: not on the event loop (as the API).
        await asyncio.to_thread(
            check_url, url, allow_private=ui.api.settings.webhooks.allow_private
        )
    except UrlRefused as exc:
        raise UiError(422, f"url: {exc}") from None
    return url


def _events(form: dict[str, str]) -> list[str]:
    """The ticked event types (checkboxes ``ev-<type>``, or ``ev-*`` for all)."""
    names = [k[3:] for k, v in form.items() if k.startswith("ev-") and v == "1"]
    try:
        return subscription(names)
    except ValueError as exc:
        raise UiError(422, f"events: {exc}") from None


def _description(form: dict[str, str]) -> str:
    text = form.get("description", "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise UiError(422, f"description: at most {MAX_DESCRIPTION} characters.")
    return text


def _changed(ui: UiContext) -> None:
    if ui.api.webhooks is not None:
        ui.api.webhooks.endpoints_changed()


async def webhook_list(ui: UiContext, request: Request, page: Page) -> Response:
    return await _page(ui, request)


_ONCE = re.compile(r"[0-9a-f]{24}")


async def _page(ui: UiContext, request: Request, **values: Any) -> Response:
    store = ui.api.store.webhooks
    endpoints = await store.endpoints()
    failed = {
        e.id: await store.deliveries(e.id, status="failed", limit=FAILED_SHOWN) for e in endpoints
    }
    return render(
        ui,
        request,
        "webhooks.html",
        title="Webhooks",
        endpoints=endpoints,
        failed=failed,
        shown=FAILED_SHOWN,
        periods=PERIODS,
        backlog=await store.backlog(),
        event_types=EVENT_TYPES,
        once=secrets.token_hex(12),  # the new endpoint's id: see webhook_create
        **values,
    )


async def webhook_create(ui: UiContext, request: Request, page: Page) -> Response:
    """The endpoint's id comes with the form (``once``), so the same form sent again (the
    browser's refresh of the answer, which shows the secret) creates nothing a second time:
    it made a second endpoint, and every event went out twice."""
    once = page.form.get("once", "")
    endpoint_id = "wh_" + (once if _ONCE.fullmatch(once) else secrets.token_hex(12))
    if await ui.api.store.webhooks.endpoint(endpoint_id) is not None:
        text = f"Endpoint {endpoint_id} was created already (its secret was shown once)."
        return done(page, f"/ui/webhooks#endpoint-{endpoint_id}", text)
    now = ui.api.clock()
    secret = new_secret()
    row = {
        "id": endpoint_id,
        "url": await _url(ui, page.form),
        "events": _events(page.form),
        "secret": secret,
        "description": _description(page.form),
        "source": "api",
        "created_at": now,
        "updated_at": now,
    }
    await ui.api.store.webhooks.create(row)
    _changed(ui)
    # Shown in this answer only (as the API's 201): the page after it does not have it.
    return await _page(ui, request, created=row, created_secret=secret)


async def webhook_edit(ui: UiContext, request: Request, page: Page) -> Response:
    """url, events and description (endpoints of the API), and enabled (any endpoint)."""
    endpoint = await _found(ui, request.path_params["id"])
    values: dict[str, Any] = {"enabled": page.form.get("enabled") == "1"}
    if endpoint.source != "config":
        values["url"] = await _url(ui, page.form)
        values["events"] = _events(page.form)
        values["description"] = _description(page.form)
    if not await ui.api.store.webhooks.change(endpoint.id, values, ui.api.clock()):
        raise UiError(404, "No such webhook endpoint: it may have been deleted.")
    _changed(ui)
    state = "enabled" if values["enabled"] else "disabled: events for it are not sent"
    return done(
        page, f"/ui/webhooks#endpoint-{endpoint.id}", f"Endpoint {endpoint.id} saved ({state})."
    )


async def webhook_delete(ui: UiContext, request: Request, page: Page) -> Response:
    endpoint = await _found(ui, request.path_params["id"])
    if endpoint.source == "config":
        raise UiError(409, "This endpoint comes from relay.toml: remove it there.")
    if page.form.get("confirm") != "1":
        raise UiError(400, "Tick the box to confirm that the endpoint is to be deleted.")
    await ui.api.store.webhooks.remove(endpoint.id)
    _changed(ui)
    return done(page, "/ui/webhooks", f"Endpoint {endpoint.url} deleted, with its deliveries.")


async def webhook_replay(ui: UiContext, request: Request, page: Page) -> Response:
    """``delivery``: that one failed delivery; else ``period``: the endpoint's failures
    made within it."""
    store = ui.api.store.webhooks
    endpoint = await store.endpoint(request.path_params["id"])
    if endpoint is None:
        raise UiError(404, "No such webhook endpoint: it may have been deleted.")
    now = ui.api.clock()
    one = page.form.get("delivery", "")
    if one:
        if not one.isdigit() or len(one) > 18:  # a BIGINT (SQLite's INTEGER) at most
            raise UiError(400, "delivery: a delivery id.")
        count = await store.replay(0.0, now, endpoint_id=endpoint.id, ids=[int(one)])
    else:
        period = page.form.get("period", "")
        if period not in PERIODS:
            raise UiError(400, f"period: one of {', '.join(PERIODS)}.")
        count = await store.replay(now - PERIODS[period], now, endpoint_id=endpoint.id)
    if count and ui.api.webhooks is not None:
        ui.api.webhooks.wake()
    if not count:
        text = "Nothing to replay: no failed delivery matched."
    elif endpoint.disabled_at is not None:
        text = (
            f"{count} failed deliveries to {endpoint.url} are due again, with their original "
            "webhook-id; they go once the endpoint is enabled (it is disabled)."
        )
    else:
        text = (
            f"{count} failed deliveries to {endpoint.url} will be sent again, with their "
            "original webhook-id."
        )
    return done(page, "/ui/webhooks", text)

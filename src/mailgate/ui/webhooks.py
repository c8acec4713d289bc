"""Webhooks: each endpoint with its failed deliveries, and replay (one delivery, or all of
an endpoint's failures over a period) through the webhook store's replay, the one
``mailgate webhooks replay`` and POST /v1/webhooks/{id}/replay use."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailgate.ui.web import Page, UiContext, UiError, render, security_headers

FAILED_SHOWN = 20
# Replay periods offered for an endpoint's failures, in seconds.
PERIODS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


async def webhook_list(ui: UiContext, request: Request, page: Page) -> Response:
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
        notice=request.query_params.get("done", ""),
    )


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
        if not one.isdigit():
            raise UiError(400, "delivery: a delivery id.")
        count = await store.replay(0.0, now, endpoint_id=endpoint.id, ids=[int(one)])
    else:
        period = page.form.get("period", "")
        if period not in PERIODS:
            raise UiError(400, f"period: one of {', '.join(PERIODS)}.")
        count = await store.replay(now - PERIODS[period], now, endpoint_id=endpoint.id)
    if count and ui.api.webhooks is not None:
        ui.api.webhooks.wake()
    text = (
        f"{count} failed deliveries to {endpoint.url} will be sent again, with their "
        "original webhook-id."
        if count
        else "Nothing to replay: no failed delivery matched."
    )
    target = "/ui/webhooks?" + urllib.parse.urlencode({"done": text})
    return security_headers(RedirectResponse(target, 303))

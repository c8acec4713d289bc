"""The overview: per-minute events over the last hour (inline SVG), queue depth, oldest
pending, providers. The page polls overview.json, which carries the same fragment the
page was rendered with, so the two never disagree."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailgate.store.ui import events_per_minute, queue_depth
from mailgate.ui.web import Page, UiContext, iso, render, security_headers
from mailgate.workers import WorkerUnavailable

MINUTES = 60
SERIES = ("accepted", "delivered", "deferred", "bounced")
WIDTH, HEIGHT, PAD = 600, 160, 24


def chart(series: dict[str, list[int]]) -> dict[str, Any]:
    """Polyline points per series, scaled to the largest count (at least 1)."""
    top = max([1, *(max(v) for v in series.values())])
    step = (WIDTH - 2 * PAD) / (MINUTES - 1)
    lines = {}
    for name in SERIES:
        values = series.get(name, [0] * MINUTES)
        lines[name] = " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD):.1f}"
            for i, v in enumerate(values)
        )
    totals = {name: sum(series.get(name, [])) for name in SERIES}
    return {
        "lines": lines,
        "top": top,
        "totals": totals,
        "width": WIDTH,
        "height": HEIGHT,
        "pad": PAD,
    }


async def providers(ui: UiContext) -> tuple[list[dict[str, Any]], str]:
    """The providers with their health when the delivery process can tell; a note else."""
    settings = ui.api.settings
    if ui.api.providers is not None:
        try:
            found = await ui.api.providers()
            return [
                {
                    **p,
                    "last_error_at": iso(p.get("last_error_at")),
                    "last_success_at": iso(p.get("last_success_at")),
                }
                for p in found
            ], ""
        except WorkerUnavailable:
            note = "The delivery process is not running: health is unknown."
    else:
        note = "Delivery is disabled on this node ([delivery] enabled = false)."
    listed = [
        {
            "name": p.name,
            "kind": p.kind,
            "priority": p.priority,
            "breaker": None,
            "connections_in_use": None,
            "max_connections": p.max_connections,
            "last_error": None,
            "last_error_at": "",
            "last_success_at": "",
        }
        for p in settings.providers
    ]
    return listed, note


async def snapshot(ui: UiContext) -> dict[str, Any]:
    store = ui.api.store
    now = ui.api.clock()
    series = await events_per_minute(store, now, MINUTES)
    depth = await queue_depth(store)
    oldest = await store.oldest_pending_created_at()
    found, note = await providers(ui)
    return {
        "at": iso(now),
        "series": series,
        "chart": chart(series),
        "depth": depth,
        "oldest": None if oldest is None else {"at": iso(oldest), "age": int(max(0, now - oldest))},
        "providers": found,
        "providers_note": note,
    }


async def overview(ui: UiContext, request: Request, page: Page) -> Response:
    return render(ui, request, "overview.html", data=await snapshot(ui), title="Overview")


async def overview_json(ui: UiContext, request: Request, page: Page) -> Response:
    """What the page polls: the numbers, and the live fragment rendered from them."""
    data = await snapshot(ui)
    html = ui.env.get_template("_live.html").render(data=data)
    body = {
        "at": data["at"],
        "totals": data["chart"]["totals"],
        "depth": data["depth"],
        "oldest": data["oldest"],
        "html": html,
    }
    return security_headers(JSONResponse(body))

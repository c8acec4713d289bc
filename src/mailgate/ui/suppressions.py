"""Suppressions: list and search (keyset pages), add by hand, remove."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request
from starlette.responses import Response

from mailgate.models import Suppression
from mailgate.store.ui import search_suppressions
from mailgate.ui.web import Page, UiContext, UiError, done, render

PAGE_SIZE = 100


async def suppression_list(ui: UiContext, request: Request, page: Page) -> Response:
    query = request.query_params.get("q", "").strip()
    before = None
    raw = request.query_params.get("before", "")
    if raw:
        at, _, address = raw.partition("_")
        try:
            before = (float(at), address)
        except ValueError:
            raise UiError(400, "That page link is not valid.") from None
    rows = await search_suppressions(ui.api.store, query, PAGE_SIZE + 1, before)
    next_link = ""
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        params = {"before": f"{rows[-1].created_at!r}_{rows[-1].address}"}
        if query:
            params["q"] = query
        next_link = "/ui/suppressions?" + urllib.parse.urlencode(params)
    return render(
        ui,
        request,
        "suppressions.html",
        title="Suppressions",
        rows=rows,
        query=query,
        next_link=next_link,
    )


async def suppression_add(ui: UiContext, request: Request, page: Page) -> Response:
    address = page.form.get("address", "").strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or any(c.isspace() for c in address)
        or len(address) > 320
    ):
        raise UiError(
            400, f"{address or 'The address'}: give one e-mail address, like name@example.com."
        )
    detail = page.form.get("note", "").strip()[:1000] or "added in the dashboard"
    entry = Suppression(address.lower(), "manual", detail, "", ui.api.clock())
    await ui.api.store.suppressions.add([entry])
    return done(
        page, "/ui/suppressions", f"{address.lower()} is suppressed: mail to it is refused."
    )


async def suppression_remove(ui: UiContext, request: Request, page: Page) -> Response:
    address = page.form.get("address", "").strip()
    if not address:
        raise UiError(400, "address: required.")
    removed = await ui.api.store.suppressions.remove(address)
    text = (
        f"{address} removed: mail to it is accepted again."
        if removed
        else (f"{address} was not suppressed.")
    )
    return done(page, "/ui/suppressions", text)

"""Log in with an admin API key, log out. The key is checked as the API checks it
(credentials.authenticate via ApiContext's cache); failed tries are limited per client
address, and a valid key's own rate applies as it does to its API requests."""

from __future__ import annotations

import math
import secrets
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailgate.store.ui import UiSession, add_session, end_session
from mailgate.ui.session import COOKIE, PRE_COOKIE
from mailgate.ui.web import (
    Page,
    UiContext,
    UiError,
    read_form,
    refuse_other_sites,
    render,
    security_headers,
)
from mailgate.units import parse_rate


def _next(target: str) -> str:
    """Only a path inside /ui/ (no open redirect to another site)."""
    if target.startswith("/ui/") and not target.startswith("/ui//") and "\\" not in target:
        return target
    return "/ui/"


def _cookie(
    ui: UiContext, request: Request, response: Response, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        secure=ui.secure(request),
        httponly=True,
        samesite="strict",
    )


async def login_form(
    ui: UiContext, request: Request, error: str = "", status: int = 200
) -> Response:
    """The form, with a fresh pre-login nonce (CSRF for the login POST itself)."""
    signer = await ui.signer()
    nonce = secrets.token_urlsafe(16)
    response = render(
        ui,
        request,
        "login.html",
        status,
        csrf=signer.csrf(nonce),
        error=error,
        next=_next(request.query_params.get("next", "/ui/")),
    )
    _cookie(ui, request, response, PRE_COOKIE, nonce, 3600)
    return response


async def login_page(ui: UiContext, request: Request) -> Response:
    return await login_form(ui, request)


async def login(ui: UiContext, request: Request) -> Response:
    refuse_other_sites(request)
    signer = await ui.signer()
    form = await read_form(request)
    if not signer.csrf_ok(request.cookies.get(PRE_COOKIE, ""), form.get("csrf", "")):
        raise UiError(403, "This login form has expired: reload the page and try again.")
    client = request.client.host if request.client else ""
    wait = ui.failed.wait(client)
    if wait > 0:
        response = await login_form(
            ui, request, f"Too many failed logins: try again in {math.ceil(wait)} s.", 429
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    key = form.get("key", "").strip()
    cred = await ui.api._lookup(key) if key else None
    if cred is None:
        ui.failed.failed(client)
        return await login_form(ui, request, "That key is not valid.", 401)
    if cred.scope != "admin":
        ui.failed.failed(client)
        return await login_form(
            ui, request, f"A {cred.scope} key cannot open the dashboard: use an admin key.", 403
        )
    rate_text = cred.rate or ui.api.settings.http.rate
    if rate_text and ui.api.limiter.check(cred.id, parse_rate(rate_text)) > 0:
        return await login_form(ui, request, f"Too many requests for this key ({rate_text}).", 429)
    session, cookie = signer.issue(cred.id, ui.ttl, time.time())
    agent = request.headers.get("user-agent", "")
    await add_session(
        ui.api.store,
        UiSession(session.nonce, cred.id, time.time(), session.expires, client, agent),
    )
    response = security_headers(RedirectResponse(_next(form.get("next", "/ui/")), 303))
    _cookie(ui, request, response, COOKIE, cookie, int(ui.ttl))
    response.delete_cookie(PRE_COOKIE, path="/ui")
    return response


async def logout(ui: UiContext, request: Request, page: Page) -> Response:
    """Ends the session on the server (a copy of the cookie stops working too), then
    clears the cookie."""
    await end_session(ui.api.store, page.session.nonce, page.session.expires, time.time())
    response = security_headers(RedirectResponse("/ui/login", 303))
    response.delete_cookie(
        COOKIE, path="/ui", secure=ui.secure(request), httponly=True, samesite="strict"
    )
    return response

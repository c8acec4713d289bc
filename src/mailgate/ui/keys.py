"""API keys: list, create (the key is shown once, on the answer to the POST), revoke, and
change a key's rate, quota and sender domains (what ``mailgate keys create`` sets, with
the same checks: credentials.key_limits, domains of [[domains]])."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mailgate.credentials import create_key, key_limits, sender_domains
from mailgate.store.keys import DuplicateKeyName
from mailgate.ui.web import Page, UiContext, UiError, done, render

SCOPES = ("send", "read", "admin")


async def _page(ui: UiContext, request: Request, **values: object) -> Response:
    keys = await ui.api.store.keys.all()
    return render(
        ui,
        request,
        "keys.html",
        title="API keys",
        keys=keys,
        scopes=SCOPES,
        **values,
    )


async def key_list(ui: UiContext, request: Request, page: Page) -> Response:
    return await _page(ui, request)


async def key_create(ui: UiContext, request: Request, page: Page) -> Response:
    name = page.form.get("name", "").strip()
    scope = page.form.get("scope", "send")
    if scope not in SCOPES:
        raise UiError(400, f"scope: one of {', '.join(SCOPES)}.")
    try:
        key = await create_key(ui.api.store, name, scope)
    except DuplicateKeyName:
        raise UiError(409, f"A key named {name!r} exists: choose another name.") from None
    except ValueError as exc:
        raise UiError(400, f"name: {exc}") from None
    # Shown in this answer only: the store keeps its hash.
    return await _page(ui, request, created=key, created_name=name)


async def key_limits_save(ui: UiContext, request: Request, page: Page) -> Response:
    form = page.form
    record = await ui.api.store.keys.get(form.get("id", ""))
    if record is None or not record.active:
        raise UiError(404, "No such active key: it may have been revoked.")
    given = form.get("domains", "").replace(",", " ").split()
    domains, unknown = sender_domains(given, ui.api.settings.domain_names())
    if unknown:
        raise UiError(422, f"domains: not in [[domains]] of relay.toml: {', '.join(unknown)}.")
    try:
        rate, quota, kept = key_limits(form.get("rate", ""), form.get("quota", ""), domains)
    except ValueError as exc:
        raise UiError(422, str(exc)) from None
    if not await ui.api.store.keys.set_limits(record.id, rate=rate, quota=quota, domains=kept):
        raise UiError(404, "No such active key: it may have been revoked.")
    text = (
        f"Key {record.name} now: rate {rate or 'the [http] default'}, quota {quota or 'none'}, "
        f"domains {', '.join(kept) or 'all'}. It applies within seconds."
    )
    return done(page, "/ui/keys", text)


async def key_revoke(ui: UiContext, request: Request, page: Page) -> Response:
    key_id = page.form.get("id", "")
    if key_id == page.session.key_id:
        raise UiError(400, "This is the key you are logged in with: log in with another first.")
    revoked = await ui.api.store.keys.revoke(key_id, ui.api.clock())
    text = "Key revoked: it stops working within seconds." if revoked else "No such active key."
    return done(page, "/ui/keys", text)

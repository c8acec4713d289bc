"""Sessions: the active dashboard sessions of the key you are logged in with (where and
when each logged in), and ending one, which is what its own logout does (store/ui.py
end_session: refused on every node from the next request). Sessions are named on the
page by a digest of their nonce, never the nonce itself."""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response

from mailgate.store.ui import end_session_of, sessions_of
from mailgate.ui.web import Page, UiContext, UiError, done, render


def ref(nonce: str) -> str:
    return hashlib.sha256(b"ui-session\0" + nonce.encode()).hexdigest()[:20]


async def session_list(ui: UiContext, request: Request, page: Page) -> Response:
    rows = await sessions_of(ui.api.store, page.session.key_id, ui.api.clock())
    return render(
        ui,
        request,
        "sessions.html",
        title="Sessions",
        sessions=[(ref(s.nonce), s, s.nonce == page.session.nonce) for s in rows],
    )


async def session_end(ui: UiContext, request: Request, page: Page) -> Response:
    wanted = page.form.get("session", "")
    now = ui.api.clock()
    rows = await sessions_of(ui.api.store, page.session.key_id, now)
    found = next((s for s in rows if ref(s.nonce) == wanted), None)
    if found is None:
        raise UiError(404, "That session has ended or expired already.")
    if found.nonce == page.session.nonce:
        raise UiError(400, "That is this session: use Log out to end it.")
    if not await end_session_of(ui.api.store, page.session.key_id, found.nonce, now):
        raise UiError(404, "That session has ended or expired already.")
    text = f"The session from {found.client or 'an unknown address'} has ended."
    return done(page, "/ui/sessions", text)

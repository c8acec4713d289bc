"""The responses that carry mail content: the html preview (its own strict CSP, framed
only by our pages), parts as downloads, the raw source as text. Shared by stored messages
and captured mail."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailgate.ui.mail import part_bytes, preview_html
from mailgate.ui.web import PREVIEW_CSP, PREVIEW_CSP_IMAGES, UiError, security_headers

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def html_preview(request: Request, raw: bytes) -> Response:
    """The mail's html, for the iframe of its message's page (this path without /html).
    Asked for as a page of its own (a link, the login's next=), the browser is sent to that
    page instead: a mail shown at the dashboard's address could pass for one of its pages."""
    if request.headers.get("sec-fetch-dest") == "document":
        return RedirectResponse(request.url.path.removesuffix("/html"), 303)
    images = request.query_params.get("images") == "1"
    html = preview_html(raw)
    if html is None:
        raise UiError(404, "This message has no html part.")
    response = HTMLResponse(html)
    # Framed by our own page (sandboxed, no scripts): SAMEORIGIN instead of DENY.
    return security_headers(
        response, PREVIEW_CSP_IMAGES if images else PREVIEW_CSP, frame="SAMEORIGIN"
    )


def download_part(raw: bytes, index: int) -> Response:
    found = part_bytes(raw, index)
    if found is None:
        raise UiError(404, "No such part in this message.")
    part, data = found
    name = _SAFE_NAME.sub("_", part.filename)[:100] or f"part-{index}"
    response = Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    return security_headers(response, "default-src 'none'; sandbox")


def download_source(raw: bytes, name: str) -> Response:
    response = Response(
        raw,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{_SAFE_NAME.sub("_", name)}.eml"'},
    )
    return security_headers(response, "default-src 'none'; sandbox")

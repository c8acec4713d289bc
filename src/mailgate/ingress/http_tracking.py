"""The public tracking endpoints on the HTTP listener: no API key, the token is the proof.

``GET /t/o/TOKEN`` the open pixel, ``GET /t/c/TOKEN`` a click (302 to the URL signed in
the token), ``GET /u/TOKEN`` a confirmation page that changes nothing (link scanners fetch
every URL they see), ``POST /u/TOKEN`` the RFC 8058 one-click unsubscribe (what Gmail and
Yahoo send: ``List-Unsubscribe=One-Click``, form-encoded) and the page's button. A bad
token is a plain 404 with no detail.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from mailgate.events.rewrite import TAB_NEWLINE
from mailgate.events.tracking import Tracking

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_POST = 8192  # a one-click body is 26 bytes

_PAGE = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
button{font-size:1rem;padding:.6rem 1.2rem}</style></head>
<body><h1>{{ title }}</h1>
{% if done %}<p>{{ address }} will get no more mail from {{ domain }}.</p>
{% else %}<p>Stop mail from {{ domain }} to {{ address }}?</p>
<form method="post" action="">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>{% endif %}
</body></html>
"""
)

Handler = Callable[[Request], Awaitable[Response]]

# What a Location header cannot carry as it is: non-ASCII, spaces and control characters.
_NOT_URI = re.compile(r"[^\x21-\x7e]+")
_AUTHORITY = re.compile(r"[^/?#]*")


def location(url: str) -> str:
    """A signed URL (as written in the message: an IRI, maybe non-ASCII) as a URI for the
    Location header (RFC 3987 3.1): the host in IDNA, the rest percent-encoded in UTF-8.
    Tabs and line breaks are dropped, as a browser drops them (links in mail sent before
    the rewrite dropped them too may still hold them)."""
    url = TAB_NEWLINE.sub("", url)
    if not _NOT_URI.search(url):
        return url
    scheme, sep, rest = url.partition("://")
    if sep:
        cut = _AUTHORITY.match(rest).end()  # type: ignore[union-attr]  # matches always
        authority, tail = rest[:cut], rest[cut:]
        userinfo, at, hostport = authority.rpartition("@")
        host, colon, port = hostport.partition(":")
        if not host.isascii():
            # Not IDNA-able: percent-encoded below (a browser decodes a host's %XX, then
            # applies IDNA itself).
            with contextlib.suppress(UnicodeError):
                host = host.encode("idna").decode("ascii")
        url = f"{scheme}://{userinfo}{at}{host}{colon}{port}{tail}"
    return _NOT_URI.sub(lambda m: quote(m.group(0), safe=""), url)


def _not_found() -> Response:
    return PlainTextResponse("Not Found", 404, headers={"Cache-Control": "no-store"})


def _client(request: Request) -> tuple[str, str]:
    ip = request.client.host if request.client is not None else ""
    return request.headers.get("user-agent", ""), ip


def routes(tracking: Tracking) -> list[tuple[str, Handler, list[str]]]:
    async def pixel(request: Request) -> Response:
        if not await tracking.opened(request.path_params["token"], *_client(request)):
            return _not_found()
        return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)

    async def click(request: Request) -> Response:
        url = await tracking.clicked(request.path_params["token"], *_client(request))
        if url is None:
            return _not_found()
        return Response(status_code=302, headers={"Location": location(url), **_NO_CACHE})

    async def page(request: Request) -> Response:
        target = tracking.unsubscribe_target(request.path_params["token"])
        found = await tracking.recipient(target) if target is not None else None
        if found is None:
            return _not_found()
        address, domain = found
        html = _PAGE.render(title="Unsubscribe", address=address, domain=domain, done=False)
        return HTMLResponse(html, headers=_NO_CACHE)

    async def one_click(request: Request) -> Response:
        # The token alone decides (RFC 8058 section 3.1): its POST is the request, whatever
        # the form holds. Only so much of the body is read.
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_POST:
                return PlainTextResponse("Request Entity Too Large", 413)
        done = await tracking.unsubscribe(
            request.path_params["token"], "one-click", *_client(request)
        )
        if done is None:
            return _not_found()
        html = _PAGE.render(
            title="Unsubscribed", address=done.address, domain=done.domain, done=True
        )
        return HTMLResponse(html, headers=_NO_CACHE)

    return [
        ("/t/o/{token}", pixel, ["GET"]),
        ("/t/c/{token}", click, ["GET"]),
        ("/u/{token}", page, ["GET"]),
        ("/u/{token}", one_click, ["POST"]),
    ]

"""What every dashboard page shares: templates, the session check, forms with CSRF,
security headers, and errors as pages (never stack traces)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailgate.exceptions import StoreUnavailable
from mailgate.ingress.http import ApiContext
from mailgate.policy import is_loopback
from mailgate.store.ui import session_ended
from mailgate.ui.session import COOKIE, FailedLogins, Session, Signer

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM = 64 * 1024

# Pages: scripts and styles only from /ui/static, nothing framed but our own previews,
# forms only to us. Inline SVG (the chart) needs no exception.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
# A mail's html inside the sandboxed iframe: no script, no fetches; images from the mail
# itself (data:, made from cid: parts) and, when the user clicked, from anywhere. Sandboxed
# by the header too, with no form target and framed only by our pages: opened on its own,
# at the dashboard's address, a mail's fake login form posted an admin key away.
_PREVIEW_RULES = "sandbox; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
PREVIEW_CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:; {_PREVIEW_RULES}"
PREVIEW_CSP_IMAGES = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid: https: http:; "
    + _PREVIEW_RULES
)


class UiError(Exception):
    """An error the user sees as a message on a page, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UiContext:
    api: ApiContext
    failed: FailedLogins = field(default_factory=FailedLogins)
    env: Environment = field(
        default_factory=lambda: Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
    )

    _signer: Signer | None = None

    def __post_init__(self) -> None:
        self.env.filters["iso"] = iso
        self.env.filters["size"] = human_size

    async def signer(self) -> Signer:
        """The session signer, its key read (or made) in the store on first use."""
        if self._signer is None:
            from mailgate.store.ui import session_key

            self._signer = Signer(await session_key(self.api.store, secrets.token_bytes(32)))
        return self._signer

    def secure(self, request: Request) -> bool:
        """Whether the session cookies carry Secure: with an https ``public_url``, unless
        the browser reached the node over plain http directly, from another machine, at
        another address than the public one (an operator on its LAN address: a browser
        drops a Secure cookie set over plain http there, and every login failed as "form
        expired"). A proxy on this host (a loopback peer) gets Secure whatever Host it
        forwards, as do requests naming the public host; browsers keep Secure cookies
        from http://127.0.0.1 and localhost. A proxy on another machine must forward the
        public Host (nginx: ``proxy_set_header Host $host``)."""
        if request.url.scheme == "https":
            return True
        public = urllib.parse.urlsplit(self.api.settings.http.public_url)
        if public.scheme != "https":
            return False
        if public.netloc.lower() == request.url.netloc.lower():
            return True
        return is_loopback(request.client.host if request.client else "")

    @property
    def ttl(self) -> float:
        return self.api.settings.ui.session_ttl


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_size(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def security_headers(response: Response, csp: str = PAGE_CSP, frame: str = "DENY") -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Frame-Options"] = frame
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@dataclass
class Page:
    """A signed-in request: the session and what templates need."""

    request: Request
    session: Session
    csrf: str
    form: dict[str, str] = field(default_factory=dict)


def render(
    ui: UiContext, request: Request, template: str, status: int = 200, **values: Any
) -> Response:
    page: Page | None = request.scope.get("mailgate_page")
    body = ui.env.get_template(template).render(
        csrf=page.csrf if page is not None else values.pop("csrf", ""),
        signed_in=page is not None,
        path=request.url.path,
        notice=_notice(page),
        **values,
    )
    return security_headers(HTMLResponse(body, status_code=status))


def done(page: Page, path: str, text: str) -> Response:
    """A POST's 303 back to ``path``, which shows ``text`` (what the action did). The text
    travels in the query, signed with the session's CSRF token: a link made by anyone else
    cannot put its own words on an operator's dashboard ("key revoked", "call this
    number")."""
    query = {"done": text, "sig": _notice_mac(page.csrf, text)}
    path, _, anchor = path.partition("#")
    target = f"{path}?{urllib.parse.urlencode(query)}" + (f"#{anchor}" if anchor else "")
    return security_headers(RedirectResponse(target, 303))


def _notice(page: Page | None) -> str:
    """The outcome text done() sent the browser back with, if this session signed it."""
    if page is None:
        return ""
    text = page.request.query_params.get("done", "")
    sig = page.request.query_params.get("sig", "")
    # As bytes: compare_digest raises on a str that is not ASCII (a crafted link's sig).
    mac = _notice_mac(page.csrf, text).encode()
    return text if text and hmac.compare_digest(sig.encode(), mac) else ""


def _notice_mac(token: str, text: str) -> str:
    return hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind our pages send), within MAX_FORM bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise UiError(413, "The form is too large.")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise UiError(400, "The form is not UTF-8.") from None
    return dict(pairs)


Handler = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, Page], Awaitable[Response]]


def guarded(ui: UiContext, handler: Handler) -> Handler:
    """Our errors as pages with a message; anything else logged, shown as a plain one."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except UiError as exc:
            return render(ui, request, "error.html", exc.status, message=exc.message)
        except StoreUnavailable as exc:
            log.error("store unavailable during %s %s: %s", request.method, request.url.path, exc)
            return render(
                ui, request, "error.html", 503, message="The queue database is unavailable."
            )
        except Exception:
            log.exception("dashboard error in %s %s", request.method, request.url.path)
            return render(ui, request, "error.html", 500, message="Something went wrong.")

    return run


def refuse_other_sites(request: Request) -> None:
    """A POST that the browser says came from another site or origin (Sec-Fetch-Site) is
    refused whatever its token: a page on the same host (another port, a sibling name) can
    set our pre-login cookie and post a login form it fetched itself, switching the
    operator into a session of its own. Browsers without the header rely on the token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise UiError(403, "This form did not come from the dashboard's own pages.")


def signed_in(ui: UiContext, handler: PageHandler) -> Handler:
    """Only with a valid session, not ended by a logout, of a key that is still an active
    admin key; a POST only with the session's CSRF token (403 without)."""

    async def run(request: Request) -> Response:
        if request.method == "POST":
            refuse_other_sites(request)  # first: its session cookie is not even sent
        signer = await ui.signer()
        session = signer.open(request.cookies.get(COOKIE, ""))
        record = None
        if session is not None and not await session_ended(ui.api.store, session.nonce):
            record = await ui.api.store.keys.get(session.key_id)
        if session is None or record is None or not record.active or record.scope != "admin":
            if request.method != "GET":
                raise UiError(403, "Your session has ended: log in again.")
            # Back to the same page after the login, its query (a search, a page of a
            # list) included; login's _next keeps it inside /ui/.
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            query = urllib.parse.urlencode({"next": target})
            return security_headers(RedirectResponse(f"/ui/login?{query}", 303))
        page = Page(request, session, signer.csrf(session.nonce))
        request.scope["mailgate_page"] = page
        if request.method == "POST":
            page.form = await read_form(request)
            if not signer.csrf_ok(session.nonce, page.form.get("csrf", "")):
                raise UiError(403, "This form has expired or did not come from this page.")
        return await handler(request, page)

    return guarded(ui, run)


def now() -> float:
    return time.time()

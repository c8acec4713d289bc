"""The HTTP API: a Starlette app (create_app); http_server.py runs it in-process.

Authentication (Bearer or x-api-key), per-key rate limits, request-body limits, JSON
errors in the seed's shape, health endpoints. Message routes live in http_messages,
template routes in http_templates, job routes in http_jobs, analyze in http_analyze;
they call the same accept() as SMTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from mailgate import json_text
from mailgate.accept import Acceptor
from mailgate.config import Settings
from mailgate.credentials import authenticate
from mailgate.events.attempts import FirstAttempts
from mailgate.events.metrics import Metrics
from mailgate.events.tracking import Tracking
from mailgate.events.webhooks import WebhookDispatcher
from mailgate.exceptions import InsufficientStorage, StoreUnavailable
from mailgate.inflight import InflightBudget
from mailgate.ingress import http_inflight, http_json
from mailgate.models import Credential
from mailgate.ratelimit import RateLimiter
from mailgate.shared_cache import SharedCache
from mailgate.store import Store
from mailgate.submission.prepare import ApiError, error_body
from mailgate.units import parse_rate

if TYPE_CHECKING:
    from mailgate.ingress.compat.common import ErrorShape

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

AUTH_CACHE_SECONDS = 2.0  # a revoked key stops working within this long


@dataclass
class ApiContext:
    """What the route handlers share."""

    settings: Settings
    store: Store
    acceptor: Acceptor
    limiter: RateLimiter
    metrics: Metrics | None = None
    attempts: FirstAttempts | None = None  # waits for first attempts (MessagePipe's send)
    clock: Callable[[], float] = time.time
    # Wakes the delivery loop when held work becomes due (a job resumed).
    wake: Callable[[], None] = lambda: None
    webhooks: WebhookDispatcher | None = None  # told when /v1/webhooks changes endpoints
    tracking: Tracking | None = None  # the public /t/ and /u/ endpoints, with public_url
    # The delivery process's provider health (admin API); None when delivery is disabled.
    providers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    inflight: InflightBudget | None = None  # [server] max_inflight_bytes (http_inflight)
    # API keys by digest, each read from the store once per AUTH_CACHE_SECONDS.
    _keys: SharedCache[str, Credential | None] = field(default_factory=lambda: SharedCache(10_000))

    async def credential(self, request: Request, need: str | None = None) -> Credential:
        """The caller's key, checked and rate-limited; ``need``: "send" or "admin"."""
        header = request.headers.get("authorization", "")
        key = ""
        if header[:7].lower() == "bearer ":
            key = header[7:].strip()
        if not key:
            key = request.headers.get("x-api-key", "").strip()
        if not key:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required: Authorization: Bearer KEY or x-api-key: KEY",
                headers={"WWW-Authenticate": 'Bearer realm="mailgate"'},
            )
        cred = await self._lookup(key)
        if cred is None:
            raise ApiError(
                401,
                "unauthorized",
                "invalid or revoked API key",
                headers={"WWW-Authenticate": 'Bearer realm="mailgate", error="invalid_token"'},
            )
        if need == "send" and cred.scope not in ("send", "admin"):
            raise ApiError(
                403, "forbidden", f"this key has scope {cred.scope!r}; sending needs 'send'"
            )
        if need == "admin" and cred.scope != "admin":
            raise ApiError(
                403,
                "forbidden",
                f"this key has scope {cred.scope!r}; {request.url.path} needs 'admin'",
            )
        rate_text = cred.rate or self.settings.http.rate
        if rate_text:
            wait = self.limiter.check(cred.id, parse_rate(rate_text))
            if wait > 0:
                raise ApiError(
                    429,
                    "rate_limit_exceeded",
                    f"too many requests for this key (limit {rate_text})",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return cred

    async def _lookup(self, key: str) -> Credential | None:
        async def fetch() -> tuple[Credential | None, float]:
            return await authenticate(self.store, "apikey", key), AUTH_CACHE_SECONDS

        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return await self._keys.get(digest, fetch)

    async def read_json(self, request: Request) -> Any:
        """The request body as JSON, within [http] max_body_size (413 above it). The bytes
        are not kept: with a big attachment they would be one more copy of it."""
        limit = self.settings.http.max_body_size
        if self.inflight is not None:
            limit = min(limit, self.inflight.cap)  # bigger could never fit: 413, not 503
        header = request.headers.get("content-length")
        declared = int(header) if header is not None and header.isdigit() else None
        stream = request.stream()
        if declared is not None and declared > limit:
            await http_inflight.refuse_unread(request, stream, declared)
            raise _too_big(limit)
        body = bytearray()
        try:
            if declared is not None:
                http_inflight.hold(self.inflight, request, declared)
            async for chunk in stream:
                body += chunk
                if len(body) > limit:
                    body.clear()
                    await http_inflight.discard(stream, http_inflight.DRAIN_MAX)
                    raise _too_big(limit)
                http_inflight.hold(self.inflight, request, len(body))
        except http_inflight.InflightFull:
            body.clear()
            await http_inflight.discard(stream, limit)
            raise
        held = [body]  # handed over: only http_json holds the bytes while it parses them
        del body
        return http_json.decode(held)


def _too_big(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body over {limit} bytes")


_FIELD_CODES = {
    "from": "invalid_from_address",
    "to": "invalid_to_address",
    "cc": "invalid_to_address",
    "bcc": "invalid_to_address",
    "subject": "missing_subject",
    "html": "missing_body",
    "text": "missing_body",
    "attachments": "invalid_attachment",
    "template_id": "invalid_template",
    "template_data": "invalid_template",
    "recipient_variables": "invalid_to_address",
}


def parse_model(model: type[M], obj: Any, prefix: str = "") -> M:
    """Validate the shape of a request; the first problem becomes a 422 naming the field."""
    if not isinstance(obj, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object", prefix or None)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = field_path(err["loc"], prefix)
        names = [p for p in err["loc"] if isinstance(p, str) and not _TYPE_TAG.match(p)]
        code = _FIELD_CODES.get(names[0], "invalid_request") if names else "invalid_request"
        if err["type"] == "extra_forbidden":
            code, message = "unknown_field", f"{field}: unknown field"
        elif err["type"] == "missing":
            message = f"{field}: required"
        else:
            message = f"{field}: {err['msg']}"
        raise ApiError(422, code, message, field) from None


# What pydantic puts in an error's location besides field names: the member of a union
# that was tried (``str``, ``list[str]``, a model's class name, ``function-after[...]``).
_TYPE_TAG = re.compile(r"^(?:str|int|float|bool|bytes|none|[A-Z]\w*|[\w-]+\[.*\])$", re.DOTALL)


def field_path(loc: Sequence[int | str], prefix: str = "") -> str | None:
    """An error's location as the API names fields (``attachments[0].content``), without
    pydantic's union member tags; ``prefix`` (``messages[3].``) before it."""
    path = prefix.rstrip(".")
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _TYPE_TAG.match(part):
            path += f".{part}" if path else part
    return path or None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json_text.dumps(data),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def request_hash(path: str, obj: Any) -> str:
    """What makes two requests "the same" for Idempotency-Key: path and JSON content."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


Handler = Callable[[Request], Awaitable[Response]]

# Seconds a client is told to wait after a 507: the queue drains in minutes, not seconds.
STORAGE_RETRY_AFTER = "60"


def _errors(handler: Handler) -> Handler:
    """Map our errors to JSON answers; nothing else may escape as text."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            if exc.status in BEFORE_THE_BODY:
                await drop_unread(request)
            return json_response(exc.body(), exc.status, exc.headers)
        except InsufficientStorage as exc:
            log.warning("refused %s %s: %s", request.method, request.url.path, exc)
            return json_response(
                error_body(exc.error_code, exc.public_message),
                exc.http_status,
                {"Retry-After": STORAGE_RETRY_AFTER},
            )
        except StoreUnavailable as exc:
            log.error("store unavailable during %s %s: %s", request.method, request.url.path, exc)
            return json_response(
                error_body("service_unavailable", "queue unavailable, retry"),
                503,
                {"Retry-After": "5"},
            )
        except ClientDisconnect:
            return client_left(request)

    return wrapped


# Refusals made before a request's body is read (its key): the body is read and dropped
# first, or a client still sending it gets a connection reset instead of the answer.
BEFORE_THE_BODY = frozenset({401, 403, 429})


async def drop_unread(request: Request) -> None:
    header = request.headers.get("content-length")
    declared = int(header) if header is not None and header.isdigit() else http_inflight.DRAIN_MAX
    # RuntimeError: read already (refused after it); ClientDisconnect: the client is gone.
    with contextlib.suppress(RuntimeError, ClientDisconnect):
        await http_inflight.refuse_unread(request, request.stream(), declared)


def client_left(request: Request) -> Response:
    """A client gone before its body was whole: nothing was done, and nobody reads an
    answer; a line in the log, not a traceback."""
    log.info("client left during %s %s before its body ended", request.method, request.url.path)
    return Response(status_code=400)


def _http_exception(
    dialects: list[tuple[str, ErrorShape]],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's 404 (no route) and 405 (another method): in the error shape of the
    compatibility dialect whose paths the request's is under, else the native one."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        path = request.url.path
        headers = dict(exc.headers or {})
        for prefix, shape in dialects:
            if path == prefix or path.startswith(prefix + "/"):
                return json_response(
                    shape(exc.status_code, code, exc.detail), exc.status_code, headers
                )
        return json_response(error_body(code, exc.detail), exc.status_code, headers)

    return handler


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(error_body("internal_error", "internal error"), 500)


def create_app(ctx: ApiContext) -> Starlette:
    from mailgate.ingress import (
        compat,
        http_admin,
        http_analyze,
        http_jobs,
        http_messages,
        http_send,
        http_templates,
        http_webhooks,
    )
    from mailgate.ingress.openapi import openapi_document

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Ready: new mail would be taken. A node below its free-space reserve refuses all
        # of it (452, 507): a load balancer should send it elsewhere meanwhile.
        if ctx.acceptor.short_of_space():
            return json_response({"status": "insufficient_storage"}, 503)
        try:
            await ctx.store.next_due_at()
        except StoreUnavailable:
            return json_response({"status": "unavailable"}, 503)
        return json_response({"status": "ready"})

    document = openapi_document(ctx.settings)

    async def metrics(request: Request) -> Response:
        if ctx.metrics is None:
            return json_response(error_body("not_found", "no metrics"), 404)
        try:
            body = await ctx.metrics.render(ctx.store)
        except StoreUnavailable:
            return json_response(error_body("service_unavailable", "queue unavailable"), 503)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes = []
    if ctx.tracking is not None:
        # First: the most frequent requests match without trying the API's routes. Their
        # plain 404s are their own, never the API's JSON error shape.
        from mailgate.ingress import http_tracking

        routes += [
            Route(path, handler, methods=methods)
            for path, handler, methods in http_tracking.routes(ctx.tracking)
        ]
    # Then the sends, the most frequent of the API's requests: each route is tried in turn.
    routes += [
        Route(path, _errors(handler), methods=methods)
        for path, handler, methods in http_send.routes(ctx)
    ]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    for path, handler, methods in (
        *http_analyze.routes(ctx),
        *http_messages.routes(ctx),
        *http_templates.routes(ctx),
        *http_jobs.routes(ctx),
        *http_webhooks.routes(ctx),
        *http_admin.routes(ctx),
    ):
        routes.append(Route(path, _errors(handler), methods=methods))
    # The dialects answer every error in their own shape (compat.common.guarded).
    routes.extend(
        Route(path, handler, methods=methods) for path, handler, methods in compat.routes(ctx)
    )
    from mailgate.ui.settings import ui_enabled

    if ui_enabled(ctx.settings.ui, ctx.settings.http.listen):
        from mailgate.ui.app import create_ui, root

        routes.append(Route("/ui", root, methods=["GET"]))
        routes.append(Mount("/ui", app=create_ui(ctx)))  # the dashboard (mailgate.ui)

    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_exception(compat.error_shapes(ctx)),
            Exception: _internal_error,
        },
        middleware=[Middleware(http_inflight.ReleaseInflight)],
    )
    # A path with a slash too many is a 404 in its route's shape, not an empty 307 to the
    # other form built from the client's Host header (always http://).
    app.router.redirect_slashes = False
    return app

"""The dashboard as a Starlette app of its own, mounted at /ui by ingress.http.create_app:
its errors are pages (not the API's JSON), and every answer carries its security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mailgate.ingress.http import ApiContext
from mailgate.ui import (
    auth,
    captured,
    jobs,
    keys,
    mail_templates,
    messages,
    overview,
    sessions,
    suppressions,
    webhooks,
)
from mailgate.ui.web import HERE, Page, UiContext, guarded, render, security_headers, signed_in

PageFn = Callable[[UiContext, Request, Page], Awaitable[Response]]


class _Static(StaticFiles):
    """Vendored files with the dashboard's headers (and no directory listings)."""

    async def get_response(self, path: str, scope: dict) -> Response:  # type: ignore[override]
        return security_headers(await super().get_response(path, scope))


async def root(request: Request) -> Response:
    """/ui without its slash (outside the mount, which matches /ui/ and below)."""
    return security_headers(RedirectResponse("/ui/", 308))


def create_ui(api: ApiContext) -> Starlette:
    ui = UiContext(api)

    def page(fn: PageFn) -> Callable[[Request], Awaitable[Response]]:
        return signed_in(ui, partial(fn, ui))

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        messages_ = {404: "There is no such page.", 405: "That method is not allowed here."}
        text = messages_.get(exc.status_code, "That request cannot be answered.")
        return render(ui, request, "error.html", exc.status_code, message=text)

    routes = [
        Route("/", page(overview.overview), methods=["GET"]),
        Route("/overview.json", page(overview.overview_json), methods=["GET"]),
        Route("/login", guarded(ui, partial(auth.login_page, ui)), methods=["GET"]),
        Route("/login", guarded(ui, partial(auth.login, ui)), methods=["POST"]),
        Route("/logout", page(auth.logout), methods=["POST"]),
        Route("/messages", page(messages.message_list), methods=["GET"]),
        Route("/messages/{id}", page(messages.message_detail), methods=["GET"]),
        Route("/messages/{id}/html", page(messages.message_html), methods=["GET"]),
        Route("/messages/{id}/source", page(messages.message_source), methods=["GET"]),
        Route("/messages/{id}/parts/{index:int}", page(messages.message_part), methods=["GET"]),
        Route("/messages/{id}/action", page(messages.message_action), methods=["POST"]),
        Route("/captured", page(captured.captured_list), methods=["GET"]),
        Route("/captured/{box}/{sub}/{name}", page(captured.captured_detail), methods=["GET"]),
        Route("/captured/{box}/{sub}/{name}/html", page(captured.captured_html), methods=["GET"]),
        Route(
            "/captured/{box}/{sub}/{name}/source", page(captured.captured_source), methods=["GET"]
        ),
        Route(
            "/captured/{box}/{sub}/{name}/parts/{index:int}",
            page(captured.captured_part),
            methods=["GET"],
        ),
        Route("/jobs", page(jobs.job_list), methods=["GET"]),
        Route("/jobs/{id}", page(jobs.job_detail), methods=["GET"]),
        Route("/jobs/{id}/action", page(jobs.job_action), methods=["POST"]),
        Route("/templates", page(mail_templates.template_list), methods=["GET"]),
        Route("/templates/create", page(mail_templates.template_create), methods=["POST"]),
        Route("/templates/{id}", page(mail_templates.template_detail), methods=["GET"]),
        Route("/templates/{id}", page(mail_templates.template_save), methods=["POST"]),
        Route("/templates/{id}/delete", page(mail_templates.template_delete), methods=["POST"]),
        Route("/webhooks", page(webhooks.webhook_list), methods=["GET"]),
        Route("/webhooks/create", page(webhooks.webhook_create), methods=["POST"]),
        Route("/webhooks/{id}/edit", page(webhooks.webhook_edit), methods=["POST"]),
        Route("/webhooks/{id}/delete", page(webhooks.webhook_delete), methods=["POST"]),
        Route("/webhooks/{id}/replay", page(webhooks.webhook_replay), methods=["POST"]),
        Route("/suppressions", page(suppressions.suppression_list), methods=["GET"]),
        Route("/suppressions/add", page(suppressions.suppression_add), methods=["POST"]),
        Route("/suppressions/remove", page(suppressions.suppression_remove), methods=["POST"]),
        Route("/keys", page(keys.key_list), methods=["GET"]),
        Route("/keys/create", page(keys.key_create), methods=["POST"]),
        Route("/keys/revoke", page(keys.key_revoke), methods=["POST"]),
        Route("/keys/limits", page(keys.key_limits_save), methods=["POST"]),
        Route("/sessions", page(sessions.session_list), methods=["GET"]),
        Route("/sessions/end", page(sessions.session_end), methods=["POST"]),
        Mount("/static", app=_Static(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.router.redirect_slashes = False  # as the API's (ingress.http.create_app)
    return app

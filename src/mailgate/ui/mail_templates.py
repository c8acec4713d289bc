"""Templates: list, create, edit, and preview-render with sample variables. Checks and
renders with what the /v1/templates API and the send path use (http_templates' checks,
rendering.render_all in the bounded sandbox), so the page shows the same errors a send
would get."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.exceptions import DuplicateEntry
from mailgate.ids import new_id
from mailgate.ingress.http_templates import _check, _sender
from mailgate.rendering import TemplateProblem, render_all
from mailgate.store import TemplateRecord
from mailgate.submission.prepare import ApiError
from mailgate.ui.web import PAGE_CSP, Page, UiContext, UiError, done, render, security_headers

SHOWN = 500
MAX_VARIABLES = 64 * 1024
# The preview's answer only: a mail template's look is its inline styles. Scripts stay
# off (script-src 'self', and the preview is a sandboxed iframe without allow-scripts).
PREVIEW_PAGE_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
FIELDS = ("name", "from", "subject", "html", "text")


async def _found(ui: UiContext, template_id: str) -> TemplateRecord:
    record = await ui.api.store.templates.get(template_id)
    if record is None:
        raise UiError(404, f"No template {template_id}: it may have been deleted.")
    return record


def _edited(form: dict[str, str]) -> dict[str, Any]:
    """The form's fields as the API's checks take them; their errors as messages."""
    values: dict[str, Any] = {k: form.get(k, "") for k in FIELDS}
    values["name"] = values["name"].strip()
    if not values["name"] or len(values["name"]) > 200:
        raise UiError(422, "name: 1 to 200 characters.")
    try:
        _check(values)
        values["from_address"] = _sender(values.pop("from")) or ""
    except ApiError as exc:
        raise UiError(422, exc.message) from None
    values["active"] = form.get("active") == "1"
    return values


def _variables(text: str) -> dict[str, Any]:
    if len(text) > MAX_VARIABLES:
        raise TemplateProblem("variables: at most 64 KB", "variables")
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TemplateProblem(f"variables: not JSON ({exc})", "variables") from None
    if not isinstance(data, dict):
        raise TemplateProblem('variables: a JSON object, like {"name": "Ann"}', "variables")
    return data


async def template_list(ui: UiContext, request: Request, page: Page) -> Response:
    records = await ui.api.store.templates.all(limit=SHOWN)
    return render(
        ui,
        request,
        "templates.html",
        title="Templates",
        records=records,
        shown=SHOWN,
    )


async def template_create(ui: UiContext, request: Request, page: Page) -> Response:
    values = _edited(page.form)
    now = ui.api.clock()
    record = TemplateRecord(
        id=new_id(),
        name=values["name"],
        subject=values["subject"],
        html=values["html"],
        text=values["text"],
        active=values["active"],
        created_at=now,
        updated_at=now,
        from_address=values["from_address"],
    )
    try:
        await ui.api.store.templates.add(record)
    except DuplicateEntry:  # a new id: only if it was made twice
        raise UiError(409, "That template exists already: try again.") from None
    return done(page, f"/ui/templates/{record.id}", "Template created.")


async def template_detail(ui: UiContext, request: Request, page: Page) -> Response:
    record = await _found(ui, request.path_params["id"])
    form = {
        "name": record.name,
        "from": record.from_address,
        "subject": record.subject,
        "html": record.html,
        "text": record.text,
        "active": "1" if record.active else "",
        "variables": "{}",
    }
    return render(
        ui,
        request,
        "template.html",
        title=record.name,
        record=record,
        form=form,
    )


async def template_save(ui: UiContext, request: Request, page: Page) -> Response:
    """Save, or (``preview`` pressed) render the form as it stands without saving it."""
    record = await _found(ui, request.path_params["id"])
    if page.form.get("do") == "preview":
        return _preview(ui, request, page, record)
    try:
        values = _edited(page.form)
    except UiError as exc:  # shown with the form as it was, not on a page of its own
        return _form_page(ui, request, page, record, exc.message, None, "Not saved", 422)
    values["active"] = int(values["active"])
    values["updated_at"] = ui.api.clock()
    if not await ui.api.store.templates.update(record.id, values):
        raise UiError(404, f"No template {record.id}: it may have been deleted.")
    return done(page, f"/ui/templates/{record.id}", "Template saved: sends use it now.")


async def template_delete(ui: UiContext, request: Request, page: Page) -> Response:
    """The store's delete, as DELETE /v1/templates/{id}: sends naming it fail from now on."""
    record = await _found(ui, request.path_params["id"])
    if page.form.get("confirm") != "1":
        raise UiError(400, "Tick the box to confirm that the template is to be deleted.")
    if not await ui.api.store.templates.delete(record.id):
        raise UiError(404, f"No template {record.id}: it may have been deleted.")
    return done(page, "/ui/templates", f"Template {record.name!r} ({record.id}) deleted.")


def _preview(ui: UiContext, request: Request, page: Page, record: TemplateRecord) -> Response:
    form = {k: page.form.get(k, "") for k in (*FIELDS, "variables")}
    error = ""
    rendered: tuple[str, str, str] | None = None
    try:
        data = _variables(form["variables"])
        rendered = render_all(form["subject"], form["html"], form["text"], data)
    except TemplateProblem as exc:
        error = str(exc)
    status = 422 if error else 200
    return _form_page(ui, request, page, record, error, rendered, "It does not render", status)


def _form_page(
    ui: UiContext,
    request: Request,
    page: Page,
    record: TemplateRecord,
    error: str,
    rendered: tuple[str, str, str] | None,
    error_title: str,
    status: int,
) -> Response:
    """The edit form as the user left it, with a preview or an error under it."""
    form = {k: page.form.get(k, "") for k in (*FIELDS, "active", "variables")}
    response = render(
        ui,
        request,
        "template.html",
        status,
        title=record.name,
        record=record,
        form=form,
        error=error,
        error_title=error_title,
        rendered=rendered,
    )
    return security_headers(response, csp=PREVIEW_PAGE_CSP)

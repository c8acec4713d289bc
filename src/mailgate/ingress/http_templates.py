"""``/v1/templates``: stored subjects and bodies with ``{{ var }}`` placeholders."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.exceptions import DuplicateEntry
from mailgate.ids import new_id
from mailgate.ingress.http import ApiContext, json_response, parse_model
from mailgate.ingress.http_models import TemplateIn, TemplateUpdate
from mailgate.ingress.http_params import Route, int_param, iso, limit_param
from mailgate.rendering import TemplateProblem, check_syntax
from mailgate.store import TemplateRecord
from mailgate.submission.prepare import HEADER_CONTROL, ApiError, invalid, parse_mailbox

_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _out(t: TemplateRecord) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "from": t.from_address or None,
        "subject": t.subject,
        "html": t.html,
        "text": t.text,
        "active": t.active,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
    }


def _check(fields: dict[str, Any]) -> None:
    for name in ("name", "subject", "html", "text"):
        value = fields.get(name)
        if value and "\x00" in value:  # PostgreSQL's text cannot hold it
            raise invalid("invalid_template", f"{name}: NUL characters are not allowed", name)
        if name == "subject" and value and HEADER_CONTROL.search(value):
            # Stored, it would refuse every send that uses it (a header cannot hold it).
            raise invalid(
                "invalid_template",
                "subject: line breaks and control characters are not allowed",
                name,
            )
        if value and name != "name":
            try:
                check_syntax(value, html=name == "html", field=name)
            except TemplateProblem as exc:
                raise invalid("invalid_template", str(exc), name) from None


def _template_id(value: str | None) -> str:
    """The client's own id (its system's key, a UUID), or a new one."""
    if value is None:
        return new_id()
    # "." and "..": a client's URL library would resolve them away from the template.
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or not value.strip("."):
        raise invalid(
            "invalid_template_id", "id: 1-64 characters of letters, digits, '_', '.' or '-'", "id"
        )
    return value


def _sender(value: str | None) -> str | None:
    """A template's ``from`` as given ("Name <addr>" or an address), once it is valid."""
    if value is None or value == "":
        return value
    parse_mailbox(value, "from", "invalid_from_address")
    return value.strip()


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def found(request: Request) -> TemplateRecord:
        record = await store.templates.get(request.path_params["template_id"])
        if record is None:
            raise ApiError(404, "not_found", "no such template")
        return record

    async def create(request: Request) -> Response:
        await ctx.credential(request, need="send")
        obj = await ctx.read_json(request)
        body = parse_model(TemplateIn, obj)
        _check(body.model_dump())
        now = ctx.clock()
        record = TemplateRecord(
            id=_template_id(body.id),
            name=body.name,
            subject=body.subject,
            html=body.html,
            text=body.text,
            active=body.active,
            created_at=now,
            updated_at=now,
            from_address=_sender(body.from_) or "",
        )
        try:
            await store.templates.add(record)
        except DuplicateEntry:
            raise ApiError(
                409, "template_exists", f"id: a template {record.id!r} already exists", "id"
            ) from None
        return json_response({"data": _out(record)}, 201)

    async def list_(request: Request) -> Response:
        await ctx.credential(request)
        limit = limit_param(request, 100, 1000)
        offset = int_param(request, "offset", 0, 0, 10**9)
        records = await store.templates.all(limit=limit, offset=offset)
        return json_response({"data": [_out(t) for t in records]})

    async def get(request: Request) -> Response:
        await ctx.credential(request)
        return json_response({"data": _out(await found(request))})

    async def update(request: Request) -> Response:
        await ctx.credential(request, need="send")
        record = await found(request)
        obj = await ctx.read_json(request)
        body = parse_model(TemplateUpdate, obj)
        values = body.model_dump(exclude_none=True)
        _check(values)
        if "from_" in values:
            values["from_address"] = _sender(values.pop("from_"))
        if "active" in values:
            values["active"] = int(values["active"])
        values["updated_at"] = ctx.clock()
        if not await store.templates.update(record.id, values):
            raise ApiError(404, "not_found", "no such template")
        updated = await store.templates.get(record.id)
        assert updated is not None
        return json_response({"data": _out(updated)})

    async def delete(request: Request) -> Response:
        await ctx.credential(request, need="send")
        record = await found(request)
        await store.templates.delete(record.id)
        return json_response({"data": {"id": record.id, "deleted": True}})

    return [
        ("/v1/templates", create, ["POST"]),
        ("/v1/templates", list_, ["GET"]),
        ("/v1/templates/{template_id}", get, ["GET"]),
        ("/v1/templates/{template_id}", update, ["PUT"]),
        ("/v1/templates/{template_id}", delete, ["DELETE"]),
    ]

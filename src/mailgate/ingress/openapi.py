"""``/v1/openapi.json``: the OpenAPI 3.1 document, generated from the models that validate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mailgate import __version__
from mailgate.config import Settings
from mailgate.ingress import http_admin_models as admin
from mailgate.ingress import http_models as m
from mailgate.ingress import http_webhook_models as w
from mailgate.models import DeliveryStatus

_REF = "#/components/schemas/{model}"

# (method, path, summary, request model, success status, response model (None: no body),
# needs "send")
_OPERATIONS: list[
    tuple[str, str, str, type[BaseModel] | None, int, type[BaseModel] | None, bool]
] = [
    ("post", "/v1/messages/send", "Send one message", m.SendRequest, 202, m.MessageData, True),
    (
        "post",
        "/v1/messages/batch",
        "Send up to 1000 messages",
        m.BatchRequest,
        202,
        m.BatchData,
        True,
    ),
    (
        "post",
        "/v1/messages/analyze",
        "Check a message before sending: send's validation (as critical issues), content, "
        "links, html, attachments, DKIM/SPF/DMARC; nothing is queued",
        m.SendRequest,
        200,
        m.AnalyzeData,
        True,
    ),
    ("get", "/v1/messages", "List messages", None, 200, m.MessageList, False),
    ("get", "/v1/messages/scheduled", "List scheduled messages", None, 200, m.ScheduledList, False),
    ("get", "/v1/messages/{message_id}", "Get a message", None, 200, m.MessageDetailData, False),
    (
        "get",
        "/v1/messages/{message_id}/events",
        "A message's events",
        None,
        200,
        m.EventList,
        False,
    ),
    (
        "delete",
        "/v1/messages/{message_id}/schedule",
        "Cancel a scheduled message",
        None,
        200,
        m.CancelData,
        True,
    ),
    ("post", "/v1/templates", "Create a template", m.TemplateIn, 201, m.TemplateData, True),
    ("get", "/v1/templates", "List templates", None, 200, m.TemplateList, False),
    ("get", "/v1/templates/{template_id}", "Get a template", None, 200, m.TemplateData, False),
    (
        "put",
        "/v1/templates/{template_id}",
        "Update a template",
        m.TemplateUpdate,
        200,
        m.TemplateData,
        True,
    ),
    ("delete", "/v1/templates/{template_id}", "Delete a template", None, 200, m.TemplateData, True),
    ("get", "/v1/jobs", "List jobs (batches)", None, 200, m.JobList, False),
    ("get", "/v1/jobs/{job_id}", "A job's status and progress", None, 200, m.JobData, False),
    ("post", "/v1/jobs/{job_id}/pause", "Pause a job", None, 200, m.JobData, True),
    ("post", "/v1/jobs/{job_id}/resume", "Resume a paused job", None, 200, m.JobData, True),
    (
        "post",
        "/v1/jobs/{job_id}/stop",
        "Stop a job (cancel what has not gone out)",
        None,
        200,
        m.JobData,
        True,
    ),
    ("get", "/v1/webhooks", "Webhook endpoints (admin)", None, 200, w.WebhookList, False),
    (
        "post",
        "/v1/webhooks",
        "Add a webhook endpoint (admin); its secret is shown this once",
        w.WebhookIn,
        201,
        w.WebhookData,
        False,
    ),
    ("get", "/v1/webhooks/{webhook_id}", "A webhook endpoint", None, 200, w.WebhookData, False),
    (
        "patch",
        "/v1/webhooks/{webhook_id}",
        "Change a webhook endpoint, or enable it again",
        w.WebhookUpdate,
        200,
        w.WebhookData,
        False,
    ),
    ("delete", "/v1/webhooks/{webhook_id}", "Remove a webhook endpoint", None, 204, None, False),
    (
        "post",
        "/v1/webhooks/{webhook_id}/rotate",
        "A new secret; the previous one signs too for [webhooks] rotation_overlap",
        None,
        200,
        w.WebhookData,
        False,
    ),
    (
        "get",
        "/v1/webhooks/{webhook_id}/deliveries",
        "An endpoint's deliveries, newest first",
        None,
        200,
        w.WebhookDeliveryList,
        False,
    ),
    (
        "post",
        "/v1/webhooks/{webhook_id}/replay",
        "Send an endpoint's deliveries again (failed ones by default)",
        w.ReplayIn,
        200,
        w.ReplayData,
        False,
    ),
    *admin.OPERATIONS,
]

_OFFSET = {"name": "offset", "schema": {"type": "integer", "minimum": 0, "default": 0}}
_QUERY: dict[str, list[dict[str, Any]]] = {
    "/v1/messages/analyze": [
        {
            "name": "dns",
            "description": "false: skip the SPF/DMARC lookups of the From domain",
            "schema": {"type": "boolean", "default": True},
        }
    ],
    "/v1/messages": [
        {
            "name": "limit",
            "description": "Page size; above 100 is served as 100",
            "schema": {"type": "integer", "minimum": 1, "default": 50},
        },
        _OFFSET,
        {
            "name": "status",
            "schema": {
                "type": "string",
                "enum": ["pending", *(status.value for status in DeliveryStatus)],
            },
        },
        {"name": "to", "schema": {"type": "string"}},
        {"name": "since", "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "schema": {"type": "string", "format": "date-time"}},
    ],
    "/v1/messages/scheduled": [
        {
            "name": "limit",
            "description": "Page size; above 1000 is served as 1000",
            "schema": {"type": "integer", "minimum": 1},
        },
        _OFFSET,
    ],
    "/v1/jobs": [
        {
            "name": "limit",
            "description": "Page size; above 100 is served as 100",
            "schema": {"type": "integer", "minimum": 1},
        },
        _OFFSET,
    ],
    "/v1/webhooks/{webhook_id}/deliveries": [
        {
            "name": "status",
            "schema": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        },
        {
            "name": "limit",
            "description": "Page size; above 100 is served as 100",
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "before",
            "description": "meta.next_before of the page before",
            "schema": {"type": "string"},
        },
    ],
    "/v1/templates": [
        {
            "name": "limit",
            "description": "Page size; above 1000 is served as 1000",
            "schema": {"type": "integer", "minimum": 1},
        },
        {"name": "offset", "schema": {"type": "integer", "minimum": 0}},
    ],
    **admin.QUERY,
}

_ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing or invalid API key",
    "403": "The key's scope does not allow this",
    "404": "Not found (or not visible to this key)",
    "409": "Conflict (idempotency key reused, message not scheduled, job not active)",
    "413": "Body or message too large",
    "422": "A field is invalid; error.field names it",
    "429": "Rate limit exceeded; see Retry-After",
    "503": "Queue unavailable; retry",
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    models: list[type[BaseModel]] = [m.ErrorResponse]
    for _method, _path, _summary, req, _status, resp, _send in _OPERATIONS:
        if req is not None:
            models.append(req)
        if resp is not None:
            models.append(resp)
    unique = list(dict.fromkeys(models))
    _keys, schema = models_json_schema(
        [(model, "validation") for model in unique], ref_template=_REF
    )
    components = schema.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, req, status, resp, _send in _OPERATIONS:
        ok: dict[str, Any] = {"description": "OK"}
        if resp is not None:
            ok["content"] = {
                "application/json": {"schema": {"$ref": _REF.format(model=resp.__name__)}}
            }
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): ok,
                **{
                    code: {
                        "description": text,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": _REF.format(model="ErrorResponse")}
                            }
                        },
                    }
                    for code, text in _ERRORS.items()
                },
            },
        }
        params = [{**q, "in": "query", "required": False} for q in _QUERY.get(path, [])]
        if method != "get":
            params = []
        for name in ("message_id", "template_id", "job_id", "webhook_id", "action"):
            if "{" + name + "}" in path:
                params.append(
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                )
        if method == "post" and path.startswith("/v1/messages/"):
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                }
            )
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=req.__name__)}}
                },
            }
        paths.setdefault(path, {})[method] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "mailgate HTTP API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
    if settings.http.public_url:
        doc["servers"] = [{"url": settings.http.public_url}]
    return doc

"""Rows written by more than one module of the store (statements, jobs): one shape each."""

from __future__ import annotations

import json
from typing import Any


def event_row(
    message_id: str,
    rcpt_idx: int | None,
    recipient: str,
    type_: str,
    at: float,
    provider: str = "",
    response: str = "",
    detail: str = "",
    category: str = "",
    data: str = "",
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "rcpt_idx": rcpt_idx,
        "recipient": recipient,
        "type": type_,
        "at": at,
        "provider": provider,
        "response": response,
        "detail": detail,
        "category": category,
        "data": data,
    }


def attempt_data(update: Any) -> str:
    """An attempt event's ``data``: its duration and DKIM signer (models.DeliveryUpdate),
    shown by the dashboard; "" when neither is known (as for other events)."""
    extra: dict[str, Any] = {}
    if update.duration_ms is not None:
        extra["duration_ms"] = update.duration_ms
    if update.dkim is not None:
        extra["dkim"] = update.dkim
    return json.dumps(extra, separators=(",", ":")) if extra else ""

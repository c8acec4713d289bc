"""Rows written by more than one module of the store (statements, jobs): one shape each."""

from __future__ import annotations

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

"""A webhook's body: ``{"type", "timestamp", "data"}`` made from a claimed outbox row (the
event, its message's tags and metadata, or the job's counts)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def payload(row: dict[str, Any]) -> tuple[str, bytes]:
    """(event type, JSON body) of one outbox row as store.webhooks.claim reads it."""
    if row.get("job") is not None:
        kind = f"job.{row['job_event_type']}"
        body = {"type": kind, "timestamp": iso(row["job_event_at"]), "data": row["job"]}
        return kind, json.dumps(body, separators=(",", ":")).encode()
    kind = f"message.{row['type']}"
    data: dict[str, Any] = {
        "event_id": f"evt_{row['id_event']}" if row.get("id_event") else None,
        "message_id": row["message_id"],
        "recipient": row["recipient"],
        "subject": row["subject"],
        "tags": _json(row["tags"], []),
        "metadata": _json(row["metadata"], {}),
    }
    if data["event_id"] is None:
        del data["event_id"]
    if row["job_id"]:
        data["job_id"] = row["job_id"]
    if row["provider"]:
        data["provider"] = row["provider"]
    if row["response"]:
        data["reply"] = row["response"]
    if row["category"]:
        data["bounce_category"] = row["category"]
    if row["detail"]:
        data["detail"] = row["detail"]
    extra = _json(row["data"], {})
    if isinstance(extra, dict):
        for key in ("user_agent", "ip", "url"):
            if extra.get(key):
                data[key] = extra[key]
    body = {"type": kind, "timestamp": iso(row["at"]), "data": data}
    return kind, json.dumps(body, separators=(",", ":")).encode()

"""The writer ops that queue new messages: the enqueue of both ingresses and the DSNs of
an operator's bounce (operator.py) write the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailgate.json_text import dumps_text
from mailgate.store.big_rows import message_row_body
from mailgate.store.rows import event_row

if TYPE_CHECKING:
    from mailgate.models import NewMessage
    from mailgate.store.write_batch import Op


def enqueue_ops(batch: Sequence[NewMessage]) -> list[Op]:
    """The writer ops that queue ``batch``: its messages, one delivery and one 'queued' (or
    'scheduled') event per recipient."""
    msg_rows: list[dict[str, Any]] = []
    dlv_rows: list[dict[str, Any]] = []
    evt_rows: list[dict[str, Any]] = []
    for m in batch:
        status = "queued" if m.scheduled_at is None else "scheduled"
        due = m.created_at if m.scheduled_at is None else m.scheduled_at
        msg_rows.append(
            {
                "id": m.id,
                "created_at": m.created_at,
                "sender": m.sender,
                "subject": m.subject,
                "message_id_header": m.message_id_header,
                "source": m.source,
                "credential": m.credential,
                "client_address": m.client_address,
                "size": m.size,
                **message_row_body(m.head, m.raw),
                "key_id": m.key_id,
                "status": status,
                "display_to": dumps_text(m.display_to or m.recipients),
                # SMTP mail has none of these: no encoding for the empty values.
                "tags": dumps_text(m.tags) if m.tags else "[]",
                "metadata": dumps_text(m.metadata) if m.metadata else "{}",
                "tracking": dumps_text(m.tracking) if m.tracking else "{}",
                "scheduled_at": m.scheduled_at,
                "job_id": m.job_id,
                "provider": m.provider,
                "attempt_once": int(m.attempt_once),
            }
        )
        for idx, rcpt in enumerate(m.recipients):
            dlv_rows.append(
                {
                    "message_id": m.id,
                    "rcpt_idx": idx,
                    "recipient": rcpt,
                    "status": status,
                    "lane": 0,
                    "attempts": 0,
                    "next_attempt_at": due,
                    "lease_owner": None,
                    "provider": "",
                    "last_response": "",
                    "updated_at": m.created_at,
                    "job_id": m.job_id,
                }
            )
            evt_rows.append(event_row(m.id, idx, rcpt, status, m.created_at))
    return [
        ("insert_message", msg_rows),
        ("insert_delivery", dlv_rows),
        ("insert_event", evt_rows),
    ]

"""Checks of bulk mail: when a message counts as bulk, and whether it can be unsubscribed
from in one click (Gmail's and Yahoo's bulk sender rules)."""

from __future__ import annotations

import re

from mailgate.analysis.draft import Draft
from mailgate.analysis.issues import Issue

BULK_TAGS = frozenset(
    {
        "announcement",
        "bulk",
        "campaign",
        "digest",
        "marketing",
        "newsletter",
        "promo",
        "promotion",
        "promotional",
    }
)
BULK_RECIPIENTS = 20  # one message to this many addresses (to + cc + bcc) is a mailing
_UNSUBSCRIBE_WORD = re.compile(r"unsubscribe|opt[- ]?out", re.IGNORECASE)


def is_bulk(d: Draft) -> str:
    """Why the message is bulk mail ("" if it is not): a marketing tag, a Precedence:
    bulk/list header, or at least BULK_RECIPIENTS recipients."""
    tags = sorted({t.lower() for t in d.tags} & BULK_TAGS)
    if tags:
        return f"tagged {tags[0]!r}"
    precedence = d.headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if d.recipients >= BULK_RECIPIENTS:
        return f"{d.recipients} recipients"
    return ""


def unsubscribe(d: Draft) -> list[Issue]:
    """Bulk mail without List-Unsubscribe: Gmail and Yahoo require one-click unsubscribe
    (RFC 8058) from bulk senders since 2024."""
    why = is_bulk(d)
    if not why or d.headers.get("list-unsubscribe", "").strip():
        return []
    has_link = bool(_UNSUBSCRIBE_WORD.search(d.text) or _UNSUBSCRIBE_WORD.search(d.html))
    detail = f"Bulk mail ({why}) without a List-Unsubscribe header"
    if has_link:
        detail += " (the body has an unsubscribe link)"
    return [
        Issue(
            "compliance",
            "missing_unsubscribe",
            "medium" if has_link else "high",
            detail,
            10 if has_link else 15,
            "Add List-Unsubscribe and List-Unsubscribe-Post: List-Unsubscribe=One-Click "
            "headers to bulk mail",
        )
    ]

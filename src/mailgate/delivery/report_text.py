"""Text helpers shared by the DSNs we build (bounce.py) and the reports we read
(reports.py, complaints.py): one-line sanitising of untrusted values and the RFC 3463
status pattern."""

from __future__ import annotations

import re
import unicodedata

# Not inside a longer dotted number (an IP address such as 10.5.1.1 is no status).
STATUS = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)", re.ASCII)

MAX_DIAGNOSTIC = 2000  # characters kept from a remote reply


def clean(text: str) -> str:
    """One line of text: control and format characters dropped, whitespace collapsed.

    Values from remote replies and the envelope end up in headers; CR/LF there would be
    header injection (and CPython's own folding has had bugs there, CVE-2024-6923).
    """
    if not isinstance(text, str):
        return ""
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in DROP_CATEGORIES
    )
    return " ".join(text.split())


DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def truncate(text: str) -> str:
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 3] + "..."

"""Text from outside (clients, upstream servers) made safe to store and to send on.

Python strings may hold what neither store can: lone surrogates (bytes that were not
UTF-8, decoded with ``surrogateescape`` by aiosmtpd and aiosmtplib, or a JSON ``\\udcff``
escape) cannot be encoded at all, and PostgreSQL's text type refuses NUL. A value that
reached a commit like that failed it, over and over: an SMTP client got 451 for ever and
a delivery's result could never be recorded.
"""

from __future__ import annotations

_CONTROLS = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def utf8_encodable(text: str) -> bool:
    """False for text holding lone surrogates."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD and control characters (NUL too) dropped;
    tabs and line breaks stay."""
    if not utf8_encodable(text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # surrogates that were not escaped bytes
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text.translate(_CONTROLS)

"""A lean scan of a message's header block, and the headers the relay adds.

accept() runs for every message, so this reads only the few fields it needs instead of
parsing the whole message with the ``email`` package.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import format_datetime

from mailgate.text import storable

_HELO_SAFE = re.compile(rb"[^\x21-\x7e]")
# What a HELO name may show in Received: a domain or an address literal. Anything else
# becomes "?", as Postfix writes it: a "(" would open a comment swallowing the rest of the
# line, and ";" would end the trace's "from" part early.
_HELO_CHARS = r"A-Za-z0-9.\-_:\[\]"
_HELO_SHOWN = re.compile(f"[{_HELO_CHARS}]*")
_HELO_OTHER = re.compile(f"[^{_HELO_CHARS}]")


@dataclass(slots=True)  # a record: not frozen, see models.py
class HeaderInfo:
    received: int
    has_date: bool
    has_message_id: bool
    message_id: str
    subject: str


def scan(data: bytes) -> HeaderInfo:
    """Count Received headers and find Date, Message-ID and Subject."""
    end = data.find(b"\r\n\r\n")
    block = data if end < 0 else data[: end + 2]
    if data.startswith(b"\r\n"):
        block = b""
    received = 0
    has_date = False
    message_id = b""
    has_message_id = False
    subject_parts: list[bytes] = []
    current = b""
    for line in block.split(b"\r\n"):
        if not line:
            continue
        if line[0] in (0x20, 0x09):
            if current == b"subject":
                subject_parts.append(line)
            elif current == b"message-id" and not message_id.strip():
                message_id = line
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            current = b""
            continue
        current = name.strip().lower()
        if current == b"received":
            received += 1
        elif current == b"date":
            has_date = True
        elif current == b"message-id":
            has_message_id = True
            message_id = value
        elif current == b"subject" and not subject_parts:
            subject_parts.append(value)
    return HeaderInfo(
        received=received,
        has_date=has_date,
        has_message_id=has_message_id,
        message_id=storable(message_id.strip().decode("utf-8", "replace")),
        subject=_decode_subject(b"".join(subject_parts)),
    )


def built_info(subject: str) -> HeaderInfo | None:
    """What :func:`scan` finds in a message mime.build wrote with ``subject`` (the API's
    extra headers cannot be Received, Date, Message-ID or Subject), without reading it
    again; None when the Subject line it wrote takes reading (encoded, or folded)."""
    if not subject.isascii() or "=?" in subject or len(subject) > _UNFOLDED_SUBJECT:
        return None
    return HeaderInfo(0, False, False, "", _decode_subject(subject.encode("ascii")))


# The longest subject mime.build writes on one line (a header line of 996 octets at most).
_UNFOLDED_SUBJECT = 900


# Raw subject text decoded at most: enough for the 998 characters kept (an encoded word
# of one character takes about 15). The email package's decoding takes time that grows
# with the square of the words: a 2 MB subject of encoded words held the listener for 6 s.
_SUBJECT_READ = 20_000


def _decode_subject(raw: bytes) -> str:
    text = raw[:_SUBJECT_READ].strip().decode("utf-8", "replace")
    if "=?" in text and text.isascii():  # decode_header would turn non-ASCII into "\uXXXX" text
        with contextlib.suppress(ValueError, LookupError, UnicodeError):
            text = str(make_header(decode_header(text)))
    return " ".join(storable(text).split())[:998]


_last_date: tuple[int | None, str] = (None, "")


def rfc5322_date(ts: float) -> str:
    """The date in RFC 5322 form, to the second (formatted once per second, not per call)."""
    global _last_date
    second = math.floor(ts)
    cached_second, text = _last_date
    if second != cached_second:
        text = format_datetime(datetime.fromtimestamp(second, UTC))
        _last_date = (second, text)
    return text


def received_header(
    *, helo: str, address: str, hostname: str, protocol: str, queue_id: str, ts: float
) -> bytes:
    """RFC 5321 4.4 trace header; RFC 3848 protocol names (ESMTPSA, ...)."""
    if _HELO_SHOWN.fullmatch(helo):
        helo_text = helo[:255] or "unknown"  # the usual case
    else:
        visible = _HELO_SAFE.sub(b"", helo.encode("ascii", "replace")).decode()
        helo_text = _HELO_OTHER.sub("?", visible)[:255] or "unknown"
    if not address:
        addr = "[unknown]"
    elif ":" in address:
        addr = f"[IPv6:{address}]"  # RFC 5321 4.1.3 address literal
    else:
        addr = f"[{address}]"
    return (
        f"Received: from {helo_text} ({addr})\r\n"
        f"\tby {hostname} (mailgate) with {protocol} id {queue_id};\r\n"
        f"\t{rfc5322_date(ts)}\r\n"
    ).encode("ascii")


_DKIM_FIELD = re.compile(rb"^DKIM-Signature:(.*?)\r?\n(?![ \t])", re.IGNORECASE | re.DOTALL | re.M)
_DKIM_TAG = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]+)")


def dkim_signers(data: bytes) -> str:
    """The ``d=``/``s=`` of the DKIM-Signature fields a message starts with, e.g.
    "d=example.com s=mg1" ("" when it starts with none): what an attempt signed with,
    kept on its event for the dashboard (the signature itself is not kept)."""
    out: list[str] = []
    head = data[:16384]
    pos = 0
    while True:
        m = _DKIM_FIELD.match(head, pos)
        if m is None:
            break
        tags = dict(_DKIM_TAG.findall(re.sub(rb"\s+", b" ", m.group(1))))
        d, s = tags.get(b"d", b"?"), tags.get(b"s", b"?")
        out.append(f"d={d.decode('ascii', 'replace')} s={s.decode('ascii', 'replace')}")
        pos = m.end()
    return ", ".join(out)

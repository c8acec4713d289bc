"""A stored or captured message taken apart for display: headers, text and html parts,
attachments, and an html preview that cannot run script or fetch anything remote.

The preview is served from its own route with its own Content-Security-Policy
(``default-src 'none'``) inside an iframe sandboxed without allow-scripts: mail content
never runs in the dashboard's origin. Inline images (``cid:``) become data: URLs, since a
browser cannot resolve cid: itself; remote images load only after the user asks.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message

MAX_SOURCE = 2 * 1024 * 1024  # shown in the page; the download has all of it
# Of the text part, shown in the page: a 7.9 MB one made a 10 MB page that took the
# browser 4 s; the source download has all of it.
MAX_TEXT = 512 * 1024
_CID = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)


@dataclass
class Part:
    index: int
    content_type: str
    filename: str
    size: int
    content_id: str
    inline: bool


@dataclass
class MailView:
    headers: list[tuple[str, str]]
    subject: str
    sender: str
    to: str
    date: str
    text: str | None
    html: str | None
    attachments: list[Part] = field(default_factory=list)
    source: str = ""
    source_truncated: bool = False
    text_truncated: bool = False


def _parse(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=policy.default)


def _leaves(msg: Message) -> list[Message]:
    """The parts shown: the leaves of the multipart tree, where an enclosed message
    (message/rfc822: forwarded mail, a bounce's original; message/delivery-status) is one
    part, not walked into: its html was shown as the message's own, its text listed as
    one of its attachments, and a DSN's status fields came out as two empty parts."""
    out: list[Message] = []

    def walk(part: Message) -> None:
        if part.get_content_maintype() == "message" or not part.is_multipart():
            out.append(part)
            return
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else ():
            walk(sub)

    walk(msg)
    return out


def _part_data(part: Message) -> bytes:
    """A part's content: decoded, or an enclosed message's (or status blocks') bytes."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    inner = part.get_payload()
    if not isinstance(inner, list):
        return b""
    try:
        return b"".join(m.as_bytes(policy=policy.SMTP) for m in inner if isinstance(m, Message))
    except (ValueError, TypeError, LookupError, IndexError):  # bad mail: shown as empty
        return b""


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _header(msg: Message, name: str) -> str:
    try:
        return str(msg.get(name, "") or "")
    except (ValueError, TypeError, IndexError):  # a malformed header: show it undecoded
        raw = msg.get_all(name) or [""]
        return str(raw[0])


def view(raw: bytes) -> MailView:
    """The parts of a message as the pages show them; never raises on bad mail."""
    msg = _parse(raw)
    headers: list[tuple[str, str]] = []
    for name, value in msg.raw_items():  # every header, repeated ones too, in order
        try:
            shown = str(msg.policy.header_fetch_parse(name, value))
        except (ValueError, TypeError, IndexError):
            shown = str(value)
        headers.append((name, shown))
    text = html = None
    text_truncated = False
    attachments: list[Part] = []
    for i, part in enumerate(_leaves(msg)):
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename() or ""
        if disposition != "attachment" and not filename:
            if ctype == "text/plain" and text is None:
                text = _text_of(part)
                text_truncated = len(text) > MAX_TEXT
                text = text[:MAX_TEXT]
                continue
            if ctype == "text/html" and html is None:
                html = _text_of(part)
                continue
        size = len(_part_data(part))
        cid = _header(part, "Content-ID").strip().strip("<>")
        attachments.append(
            Part(
                i,
                ctype,
                filename or _default_name(i, ctype),
                size,
                cid,
                disposition != "attachment",
            )
        )
    source = raw[:MAX_SOURCE].decode("utf-8", "replace")
    return MailView(
        headers=headers,
        subject=_header(msg, "Subject"),
        sender=_header(msg, "From"),
        to=_header(msg, "To"),
        date=_header(msg, "Date"),
        text=text,
        html=html,
        attachments=attachments,
        source=source,
        source_truncated=len(raw) > MAX_SOURCE,
        text_truncated=text_truncated,
    )


def _default_name(index: int, ctype: str) -> str:
    return f"part-{index}.eml" if ctype == "message/rfc822" else f"part-{index}"


def part_bytes(raw: bytes, index: int) -> tuple[Part, bytes] | None:
    """Leaf part ``index`` of a message (its position in walk order) and its bytes."""
    leaves = _leaves(_parse(raw))
    if not 0 <= index < len(leaves):
        return None
    part = leaves[index]
    data = _part_data(part)
    name = part.get_filename() or _default_name(index, part.get_content_type())
    cid = _header(part, "Content-ID").strip().strip("<>")
    disp = part.get_content_disposition()
    return Part(index, part.get_content_type(), name, len(data), cid, disp != "attachment"), data


def preview_html(raw: bytes) -> str | None:
    """The html part with its cid: images made data: URLs (the preview's CSP allows
    data: images only, unless the user asked for remote ones)."""
    msg = _parse(raw)
    html: str | None = None
    by_cid: dict[str, Message] = {}
    for part in _leaves(msg):
        cid = _header(part, "Content-ID").strip().strip("<>")
        if cid:
            by_cid[cid.lower()] = part
        elif (
            html is None
            and part.get_content_type() == "text/html"
            and part.get_content_disposition() != "attachment"
        ):
            html = _text_of(part)
    if html is None:
        return None

    def inline(match: re.Match[str]) -> str:
        part = by_cid.get(match.group(1).lower())
        if part is None or part.get_content_maintype() != "image":
            return match.group(0)
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return match.group(0)
        data = base64.b64encode(payload).decode("ascii")
        return f"data:{part.get_content_type()};base64,{data}"

    return _CID.sub(inline, html)

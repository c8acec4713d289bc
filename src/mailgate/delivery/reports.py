"""Bounces that come back by mail: RFC 3464 DSNs and their non-standard kin. Complaints
(RFC 5965 ARF) are read in complaints.py, with the MIME and field helpers of this module.

Pure functions, no I/O. Everything read here comes from the network and is untrusted, so
the parsers never raise: a report they cannot read is no report.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message

from mailgate.delivery.report_text import STATUS as _STATUS
from mailgate.delivery.report_text import clean as _clean
from mailgate.delivery.report_text import truncate as _truncate

__all__ = [
    "ADDRESS",
    "ReportedFailure",
    "address_field",
    "field_groups",
    "normalise_address",
    "parse_dsn",
    "report_parts",
    "status_text",
]


@dataclass(frozen=True, slots=True)
class ReportedFailure:
    """A failed recipient read from a remote server's bounce."""

    recipient: str  # "" when a non-RFC 3464 bounce names no address
    action: str
    status: str  # enhanced code, e.g. "5.1.1"
    diagnostic: str  # the remote reply without its type ("smtp;")
    remote_mta: str = ""


# ---------------------------------------------------------------------------------------
# Reading remote bounces
# ---------------------------------------------------------------------------------------

_NOT_BOUNCES = frozenset({"feedback-report", "disposition-notification"})
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_DIAG_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*\s*;\s*")
_XTEXT_CHAR = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
# An address in text. Only where a local part can begin (not inside a run of its
# characters), and without backtracking (possessive): tried from every position of a long
# run, as search() does, it took time in the square of the run's length (a report of 82 KB
# held the event loop for 5.8 s).
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
ADDRESS = re.compile(rf"(?<!{_LOCAL}){_LOCAL}++@[\w-]++(?:\.[\w-]++)+")
# The text scan reads this much of a line, and of a report: a bounce's lines are short,
# and what a sender makes long only costs time.
_SCAN_LINE, _SCAN_LINES = 1000, 5000
_ENHANCED_5 = re.compile(r"(?<![\w.])5\.[0-7]\.\d{1,3}(?!\.?\d)", re.ASCII)
_BASIC_5 = re.compile(
    r"(?:^\s*|\b(?:said|answered|replied|response|reply):\s*)(5[0-5]\d)(?:[ :-]|$)",
    re.ASCII | re.IGNORECASE,
)
_ORIGINAL_FOLLOWS = re.compile(
    r"^\s*-*\s*(below this line is a copy|this is a copy of the message|original message|"
    r"the header of the original message|returned message|undelivered message headers)",
    re.IGNORECASE,
)
_MAX_DEPTH = 20


def parse_dsn(data: bytes) -> list[ReportedFailure]:
    """The failed recipients reported by a bounce; [] when it reports none or is unreadable.

    RFC 3464 reports (message/delivery-status, or RFC 6533's global form) are read field
    by field; only ``Action: failed`` counts (delayed, delivered, relayed are not bounces).
    Other bounces (qmail, Yahoo, ...) that look like bounces (From MAILER-DAEMON, a bounce
    Subject, ...) get a best-effort scan of their text for a 5xx code and an address.

    The recipient is Original-Recipient when it holds an address (the one we sent to,
    before the remote side's aliasing), else Final-Recipient, with the domain lower-cased.
    A generic status (5.0.0, as Exim sends) is refined from the enhanced code in the
    diagnostic. The status decides what a failure means: 4.4.7 (expired) is ``failed``
    too, but it is no reason to suppress the address.
    """
    try:
        msg = email.message_from_bytes(bytes(data), policy=email.policy.compat32)
        report_type = str(msg.get_param("report-type", "") or "").strip().lower()
        if msg.get_content_type() == "multipart/report" and report_type in _NOT_BOUNCES:
            return []
        groups = [
            group
            for part in report_parts(msg)
            if part.get_content_type()
            in ("message/delivery-status", "message/global-delivery-status")
            for group in field_groups(status_text(part))
            if {"action", "final-recipient", "original-recipient"} & group.keys()
        ]
        if groups:
            return _dedupe(f for f in map(_failure, groups) if f is not None)
        if _looks_like_bounce(msg):
            return _dedupe(_scan_text(msg))
        return []
    except Exception:  # untrusted input from anywhere: a bounce we cannot read is not an error
        return []


def report_parts(msg: Message, depth: int = 0) -> Iterator[Message]:
    """The message and its multipart descendants; not inside message/rfc822 (the returned
    original, which must not be mistaken for the report)."""
    yield msg
    if msg.get_content_maintype() == "multipart" and depth < _MAX_DEPTH:
        payload = msg.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from report_parts(part, depth + 1)


def status_text(part: Message) -> str:
    """The text of a delivery-status part, undoing how the email package split it up.

    The parser turns message/delivery-status into one message per field block (and the
    global form into a nested message); anything it could not read as fields, such as a
    base64 body, ends up as those messages' payloads.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        joiner = b"\n" if part.get_content_type() == "message/delivery-status" else b"\n\n"
        chunks = []
        for block in payload:
            if not isinstance(block, Message):
                continue
            raw = b"\n".join(_raw(f"{name}: {value}") for name, value in block.raw_items())
            body = block.get_payload(decode=True)  # bytes as received, not "?"-replaced
            if isinstance(body, bytes) and body.strip():
                raw = raw + joiner + body if raw else body
            chunks.append(raw)
        raw = b"\n\n".join(chunks)
    else:
        raw = _raw(payload) if isinstance(payload, str) else b""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)  # a truncated report still has a prefix
        raw = binascii.a2b_base64(clean[: len(clean) // 4 * 4])
    elif cte == "quoted-printable":
        raw = binascii.a2b_qp(raw)
    return raw.decode("utf-8", "replace")


def _raw(text: str) -> bytes:
    """Bytes of text parsed from bytes (the email package keeps non-ASCII as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def field_groups(text: str) -> list[dict[str, str]]:
    """Field blocks as dicts (lower-case names, unfolded values).

    A blank line ends a block, and so does a field seen twice: some MTAs omit the blank
    lines between recipients.
    """
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                groups.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t":
            if last:
                current[last] = f"{current[last]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not _FIELD_NAME.fullmatch(name):
            last = ""
            continue
        if name in current:
            groups.append(current)
            current = {}
        current[name] = value.strip()
        last = name
    if current:
        groups.append(current)
    return groups


def _failure(group: dict[str, str]) -> ReportedFailure | None:
    status = _first_status(group.get("status", ""), anchored=True)
    action = (group.get("action", "").split() or [""])[0].lower()
    if not action and status.startswith("5."):
        action = "failed"  # no Action field: a permanent status says enough
    if action != "failed":
        return None
    diagnostic = _truncate(_clean(_DIAG_TYPE.sub("", group.get("diagnostic-code", ""), 1)))
    from_diagnostic = _first_status(diagnostic, anchored=False)
    if (not status or status.endswith(".0.0")) and from_diagnostic[:1] == (status or "5")[:1]:
        status = from_diagnostic
    recipient = address_field(group.get("original-recipient", "")) or address_field(
        group.get("final-recipient", "")
    )
    remote = _clean(group.get("remote-mta", ""))
    remote = (remote.partition(";")[2] or remote).strip().split(" ")[0].rstrip(".")
    return ReportedFailure(recipient, "failed", status or "5.0.0", diagnostic, remote)


def _first_status(text: str, *, anchored: bool) -> str:
    m = _STATUS.match(text.strip()) if anchored else _STATUS.search(text)
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else ""


def address_field(value: str) -> str:
    """``type; address`` -> normalised address, or "" if it does not hold one."""
    kind, sep, addr = _clean(value).partition(";")
    if not sep:
        kind, addr = "rfc822", kind
    addr = addr.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        addr = _XTEXT_CHAR.sub(_unxtext, addr)
    return normalise_address(addr)


def _unxtext(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return m.group(0)
    return chr(code)


def normalise_address(addr: str) -> str:
    local, at, domain = addr.rpartition("@")
    domain = domain.rstrip(".")
    if not at or not local or not domain or " " in addr or len(addr) > 320:
        return ""
    return f"{local}@{domain.lower()}"


def _dedupe(failures: Iterable[ReportedFailure]) -> list[ReportedFailure]:
    seen: set[str] = set()
    out = []
    for f in failures:
        key = f.recipient.lower()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _looks_like_bounce(msg: Message) -> bool:
    """Gate for the text scan: an auto-reply that mentions "version 5.1.1" is no bounce,
    nor is one whose subject repeats the original's ("Out of office: Your bounce report"):
    an auto-reply (RFC 3834, or the headers and subjects of the common responders) counts
    only when it comes from a mailer daemon or postmaster, as bounces do."""
    if msg.get_content_type() == "multipart/report" or msg.get("x-failed-recipients"):
        return True
    sender = _clean(str(msg.get("from", "")))
    if _BOUNCE_FROM.search(sender):
        return True
    subject = _clean(str(msg.get("subject", "")))
    return bool(_BOUNCE_SUBJECT.search(subject)) and not _auto_reply(msg, subject)


def _auto_reply(msg: Message, subject: str) -> bool:
    auto = _clean(str(msg.get("auto-submitted", ""))).lower()
    precedence = _clean(str(msg.get("precedence", ""))).lower()
    return (
        auto.startswith("auto-replied")
        or precedence == "auto_reply"
        or any(msg.get(h) for h in _AUTO_REPLY_HEADERS)
        or bool(_AUTO_REPLY_SUBJECT.match(subject))
    )


# What vacation responders add (Exchange, qmail, Zimbra, Gmail...), and how their
# subjects begin.
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond")
_AUTO_REPLY_SUBJECT = re.compile(
    r"\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?reply|auto:|autoresponse|"
    r"abwesenheitsnotiz|absence|r[ée]ponse automatique|respuesta autom[aá]tica|vacation)",
    re.IGNORECASE,
)


_BOUNCE_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|fail|notification|report)|failure notice|returned mail|"
    r"returned to sender|mail delivery|non-?delivery|could not be delivered|bounce",
    re.IGNORECASE,
)


def _scan_text(msg: Message) -> list[ReportedFailure]:
    """Best effort for bounces without a delivery-status part: lines with a 5xx code.

    The address is taken from the code's line (and its indented continuation), else from
    the nearest line above (qmail puts ``<addr>:`` on its own line). Text after a marker
    such as "Below this line is a copy of the message" is the original, not the report.
    """
    lines: list[str] = []
    for part in report_parts(msg):
        if part.get_content_type() != "text/plain":
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        try:
            text = raw.decode(part.get_content_charset() or "utf-8", "replace")
        except LookupError:
            text = raw.decode("utf-8", "replace")
        for line in text.splitlines():
            if _ORIGINAL_FOLLOWS.match(line) or len(lines) >= _SCAN_LINES:
                break
            lines.append(line[:_SCAN_LINE])
    found: list[ReportedFailure] = []
    anonymous: list[ReportedFailure] = []
    for i, line in enumerate(lines):
        enhanced = _ENHANCED_5.search(line)
        basic = _BASIC_5.search(line)
        if not enhanced and not basic:
            continue
        start = min(m.start(1 if m is basic else 0) for m in (enhanced, basic) if m)
        context = [line]
        for follow in lines[i + 1 : i + 6]:
            if not follow[:1].isspace() or not follow.strip() or _ENHANCED_5.search(follow):
                break
            context.append(follow)
        diagnostic = _truncate(_clean(" ".join([line[start:], *context[1:]])))
        status = enhanced.group(0) if enhanced else "5.0.0"
        address = _first_address(" ".join(context))
        for above in reversed(lines[max(0, i - 6) : i]):
            if address:
                break
            address = _first_address(above)
        failure = ReportedFailure(
            address, "failed", _first_status(status, anchored=True), diagnostic
        )
        (found if address else anonymous).append(failure)
    return found or anonymous[:1]


def _first_address(text: str) -> str:
    m = ADDRESS.search(text)
    return normalise_address(m.group(0)) if m else ""

"""Delivery status notifications (RFC 3464) out, asynchronous bounces in, and VERP.

Pure functions, no I/O: the delivery loop decides when a DSN is due and queues the bytes
built here; the bounce ingress maps a VERP address back to the delivery and reads the
remote server's report with :func:`parse_dsn`. Everything read from the network is
untrusted, so the parsers never raise and every value put into a header is sanitised.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
import secrets
import textwrap
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime

__all__ = [
    "FailedRecipient",
    "ReportedFailure",
    "build_dsn",
    "parse_dsn",
    "parse_verp",
    "should_send_dsn",
    "verp_address",
]

# RFC 3464 2.3.3 action values.
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}
# Not inside a longer dotted number (an IP address such as 10.5.1.1 is no status).
_STATUS = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)", re.ASCII)

# Parts are encoded with the SMTP policy (QP lines <= 76); the whole message is written with
# a 998-octet limit so that the delivery-status fields, folded here, are never refolded by
# the email package into RFC 2047 encoded-words (not allowed in DSN fields).
_PART_POLICY = email.policy.SMTP
_OUT_POLICY = email.policy.SMTP.clone(max_line_length=998)

_MAX_DIAGNOSTIC = 2000  # characters kept from a remote reply
_FOLD_WIDTH = 78
_MAX_TOKEN = 900  # longer unbroken runs are split so no line reaches 998 octets
_TEXT_WIDTH = 76


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedRecipient:
    """One recipient to report in a DSN, from the final attempt's classified reply."""

    recipient: str
    action: str = "failed"
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    diagnostic: str  # the remote reply line, e.g. "550 5.1.1 <x@y>: no such user"
    remote_mta: str = ""  # provider or MX host name, when known
    last_attempt: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class ReportedFailure:
    """A failed recipient read from a remote server's bounce."""

    recipient: str  # "" when a non-RFC 3464 bounce names no address
    action: str
    status: str  # enhanced code, e.g. "5.1.1"
    diagnostic: str  # the remote reply without its type ("smtp;")
    remote_mta: str = ""


# ---------------------------------------------------------------------------------------
# Building DSNs
# ---------------------------------------------------------------------------------------


def build_dsn(
    *,
    original: bytes,
    queue_id: str,
    envelope_sender: str,
    hostname: str,
    failures: Sequence[FailedRecipient],
    now: float,
    reporting_mta: str | None = None,
    arrival_date: float | None = None,
) -> bytes:
    """The RFC 3464 DSN telling ``envelope_sender`` which recipients failed, as CRLF bytes.

    The report carries only the original's header block (text/rfc822-headers), never its
    body: the sender still has the content, and returning it would turn the relay into a
    backscatter amplifier. The result is 7-bit unless ``envelope_sender`` is non-ASCII
    (then it needs SMTPUTF8, like the original transaction). ``arrival_date`` defaults to
    the time inside a UUIDv7 queue id. Queue it with the null reverse-path (``MAIL FROM:<>``)
    so that a failing DSN can never produce another one.
    """
    if not failures:
        raise ValueError("a DSN needs at least one recipient")
    host = _clean_hostname(hostname)
    if not host:
        raise ValueError(f"invalid hostname for a DSN: {hostname!r}")
    reporter = _clean_hostname(reporting_mta) if reporting_mta else host
    sender = _clean(envelope_sender).strip("<> ")
    qid = _clean(queue_id)
    token = secrets.token_hex(8)

    msg = EmailMessage(policy=_PART_POLICY)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{host}>"
    msg["To"] = sender
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = _date(now)
    msg["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9._-]', '', qid)}.dsn.{token}@{host}>"
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: automatic responders must not answer
    msg["MIME-Version"] = "1.0"
    # set_raw keeps report-type unquoted, as Postfix writes it (some bounce parsers grep it).
    msg.set_raw(
        "Content-Type",
        f'multipart/report; report-type=delivery-status;\n boundary="=_mailgate-dsn-{token}"',
    )
    msg.preamble = "This is a MIME-encapsulated message.\n"
    msg.attach(_notification(host, qid, failures))
    msg.attach(_delivery_status(reporter, qid, failures, _arrival(arrival_date, qid)))
    msg.attach(_headers_part(original))
    policy = _OUT_POLICY if sender.isascii() else _OUT_POLICY.clone(utf8=True)
    return msg.as_bytes(policy=policy)


def _notification(host: str, queue_id: str, failures: Sequence[FailedRecipient]) -> Message:
    """Part 1: what a person reads. UTF-8, wrapped, quoted-printable when not ASCII."""
    paragraphs = [
        f"This is the mail system at host {host}.",
        "I'm sorry to have to inform you that your message could not be delivered to one "
        "or more recipients. The headers of your message are attached below.",
        f"Queue ID: {queue_id}",
        "The mail system reported:",
    ]
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend(textwrap.wrap(paragraph, width=_TEXT_WIDTH, break_long_words=True))
        lines.append("")
    for f in failures:
        diagnostic = _truncate(_clean(f.diagnostic)) or f"status {_status_or_default(f)}"
        where = f" {_clean(f.remote_mta)} said:" if f.remote_mta.strip() else ""
        entry = f"<{_clean(f.recipient)}>:{where} {diagnostic}"
        lines.extend(
            textwrap.wrap(
                entry,
                width=_TEXT_WIDTH,
                subsequent_indent="    ",
                break_long_words=True,
                break_on_hyphens=False,
            )
        )
        lines.append("")
    text = "\n".join(lines)
    part = EmailMessage(policy=_PART_POLICY)
    part.set_content(text, charset="utf-8", cte="7bit" if text.isascii() else "quoted-printable")
    del part["MIME-Version"]  # set_content adds it; it belongs on the top level only
    part["Content-Description"] = "Notification"
    return part


def _delivery_status(
    reporter: str, queue_id: str, failures: Sequence[FailedRecipient], arrival: float | None
) -> Message:
    """Part 2: the machine-readable report, one field block per message and per recipient.

    The blocks are compat32 messages holding pre-folded ASCII strings, so the generator
    writes them exactly as given.
    """
    per_message = [
        ("Reporting-MTA", f"dns; {reporter}"),
        ("X-Mailgate-Queue-ID", _ascii(queue_id)),
    ]
    if arrival is not None:
        per_message.append(("Arrival-Date", _date(arrival)))
    blocks = [_block(per_message)]
    for f in failures:
        action = f.action.strip().lower()
        if action not in _ACTIONS:
            raise ValueError(f"invalid DSN action: {f.action!r}")
        fields = [
            ("Final-Recipient", _recipient_field(f.recipient)),
            ("Action", action),
            ("Status", _status_or_default(f)),
        ]
        if f.remote_mta.strip():
            fields.append(("Remote-MTA", f"dns; {_ascii(_clean(f.remote_mta))}"))
        diagnostic = _ascii(_truncate(_clean(f.diagnostic)))
        if diagnostic:
            fields.append(("Diagnostic-Code", f"smtp; {diagnostic}"))
        fields.append(("Last-Attempt-Date", _date(f.last_attempt)))
        blocks.append(_block(fields))
    part = Message()
    part["Content-Description"] = "Delivery report"
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(blocks)
    return part


def _headers_part(original: bytes) -> Message:
    """Part 3: the original header block, 7-bit as is or quoted-printable when it cannot be."""
    block = _header_block(original)
    part = Message()
    part["Content-Description"] = "Undelivered Message Headers"
    part["Content-Type"] = "text/rfc822-headers"
    if block.isascii() and all(len(line) <= 998 for line in block.split(b"\r\n")):
        part.set_payload(block.decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "quoted-printable"
        text = block.replace(b"\r\n", b"\n")
        part.set_payload(binascii.b2a_qp(text, istext=True).decode("ascii"))
    return part


def _block(fields: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in fields:
        block[name] = _fold(name, value)
    return block


def _fold(name: str, value: str) -> str:
    """Fold at spaces to about 78 columns; the value has no CR/LF (already sanitised)."""
    words: list[str] = []
    for word in value.split(" "):
        words.extend(word[i : i + _MAX_TOKEN] for i in range(0, len(word), _MAX_TOKEN))
    lines: list[str] = []
    line = ""
    room = _FOLD_WIDTH - len(name) - 2
    for word in words:
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= room:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
            room = _FOLD_WIDTH - 1
    lines.append(line)
    return "\n ".join(lines)


def _header_block(original: bytes) -> bytes:
    """The leading header fields only, CRLF-terminated: up to the first empty line, and
    also up to the first line that is not a header (so a malformed message without a
    separator never leaks its body)."""
    out: list[bytes] = []
    for raw in original.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if not out:
                break
        elif not _HEADER_LINE.match(line):
            break
        out.append(line)
    return b"".join(line + b"\r\n" for line in out)


_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")


def _recipient_field(recipient: str) -> str:
    """``rfc822; addr``, or RFC 6533 ``utf-8; addr`` in its 7-bit xtext form."""
    addr = _clean(recipient).strip("<> ")
    if addr.isascii():
        return f"rfc822; {addr}"
    out = []
    for ch in addr:
        code = ord(ch)
        if 0x21 <= code <= 0x7E and ch not in "\\+=":
            out.append(ch)
        else:
            out.append(f"\\x{{{code:X}}}")
    return "utf-8; " + "".join(out)


def _status_or_default(f: FailedRecipient) -> str:
    """A well-formed status; a malformed one must not stop the DSN, so use the class default."""
    m = _STATUS.fullmatch(f.status.strip())
    if m:
        return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
    return _DEFAULT_STATUS.get(f.action.strip().lower(), "2.0.0")


def _arrival(arrival_date: float | None, queue_id: str) -> float | None:
    """The given arrival time, else the millisecond timestamp of a UUIDv7 queue id."""
    if arrival_date is not None:
        return arrival_date
    if _UUID.fullmatch(queue_id) and queue_id[14] == "7":
        return int(queue_id[:8] + queue_id[9:13], 16) / 1000
    return None


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(ts), UTC))


def _clean(text: str) -> str:
    """One line of text: control and format characters dropped, whitespace collapsed.

    Values from remote replies and the envelope end up in headers; CR/LF there would be
    header injection (and CPython's own folding has had bugs there, CVE-2024-6923).
    """
    if not isinstance(text, str):
        return ""
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in _DROP_CATEGORIES
    )
    return " ".join(text.split())


_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _clean_hostname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "", name or "").strip(".")


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _truncate(text: str) -> str:
    return text if len(text) <= _MAX_DIAGNOSTIC else text[: _MAX_DIAGNOSTIC - 3] + "..."


# ---------------------------------------------------------------------------------------
# When not to send one
# ---------------------------------------------------------------------------------------


def should_send_dsn(envelope_sender: str, original: bytes) -> bool:
    """Whether a failure of ``original`` may be reported to ``envelope_sender``.

    Never to the null sender or MAILER-DAEMON, and never about a message that is itself a
    DSN or an automatic response (RFC 3464 / RFC 3834): that is how bounce loops start.
    """
    sender = (envelope_sender or "").strip().strip("<>").strip()
    if not sender:
        return False
    local = sender.rpartition("@")[0] if "@" in sender else sender
    if local.lower() == "mailer-daemon":
        return False
    try:
        headers = BytesParser(policy=email.policy.compat32).parsebytes(
            _header_block(original), headersonly=True
        )
        if headers.get_content_type() == "multipart/report":
            report_type = str(headers.get_param("report-type", "") or "").strip().lower()
            if report_type in ("delivery-status", "global-delivery-status"):
                return False
        for value in headers.get_all("auto-submitted", []):
            keyword = re.split(r"[\s;(]", str(value).strip(), maxsplit=1)[0].lower()
            if keyword and keyword != "no":
                return False
    except Exception:  # unreadable headers: not evidence of a DSN, report the failure
        return True
    return True


# ---------------------------------------------------------------------------------------
# VERP
# ---------------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)
_VERP_TAIL = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(0|[1-9][0-9]{0,8})",
    re.ASCII | re.IGNORECASE,
)
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_RCPT_IDX = 999_999_999


def verp_address(bounce_local: str, bounce_domain: str, queue_id: str, rcpt_idx: int) -> str:
    """The envelope sender for one delivery: ``bounces+{queue_id}.{rcpt_idx}@{domain}``.

    A bounce to it names the message and recipient even when the remote report is
    unreadable. UUIDs contain no ".", so the last "." splits id and index unambiguously.
    """
    if not _ATOM.fullmatch(bounce_local):
        raise ValueError(f"invalid VERP local part: {bounce_local!r}")
    if not _DOMAIN.fullmatch(bounce_domain):
        raise ValueError(f"invalid VERP domain: {bounce_domain!r}")
    qid = queue_id.lower()
    if not _UUID.fullmatch(qid):
        raise ValueError(f"queue id is not a UUID: {queue_id!r}")
    if isinstance(rcpt_idx, bool) or not isinstance(rcpt_idx, int):
        raise ValueError(f"recipient index is not an int: {rcpt_idx!r}")
    if not 0 <= rcpt_idx <= _MAX_RCPT_IDX:
        raise ValueError(f"recipient index out of range: {rcpt_idx}")
    local = f"{bounce_local}+{qid}.{rcpt_idx}"
    if len(local) > 64:  # RFC 5321 4.5.3.1.1
        raise ValueError(f"VERP local part longer than 64 octets: {local!r}")
    return f"{local}@{bounce_domain.lower()}"


def parse_verp(
    address: str, bounce_local: str, bounce_domains: Collection[str]
) -> tuple[str, int] | None:
    """(queue_id, rcpt_idx) from a VERP address, or None for anything else.

    Strict on purpose: the result marks a delivery bounced, so a near miss is not a match.
    Local part prefix and domain compare case-insensitively (some MTAs change case).
    """
    if not isinstance(address, str):
        return None
    if isinstance(bounce_domains, str):  # one domain passed bare: not its characters
        bounce_domains = (bounce_domains,)
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at or domain.lower() not in {d.lower() for d in bounce_domains if d}:
        return None
    prefix, plus, tail = local.partition("+")
    if not plus or prefix.lower() != bounce_local.lower():
        return None
    m = _VERP_TAIL.fullmatch(tail)
    if not m:
        return None
    return m.group(1).lower(), int(m.group(2))


# ---------------------------------------------------------------------------------------
# Reading remote bounces
# ---------------------------------------------------------------------------------------

_NOT_BOUNCES = frozenset({"feedback-report", "disposition-notification"})
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_DIAG_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*\s*;\s*")
_XTEXT_CHAR = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
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
            for part in _parts(msg)
            if part.get_content_type()
            in ("message/delivery-status", "message/global-delivery-status")
            for group in _field_groups(_status_text(part))
            if {"action", "final-recipient", "original-recipient"} & group.keys()
        ]
        if groups:
            return _dedupe(f for f in map(_failure, groups) if f is not None)
        if _looks_like_bounce(msg):
            return _dedupe(_scan_text(msg))
        return []
    except Exception:  # untrusted input from anywhere: a bounce we cannot read is not an error
        return []


def _parts(msg: Message, depth: int = 0) -> Iterator[Message]:
    """The message and its multipart descendants; not inside message/rfc822 (the returned
    original, which must not be mistaken for the report)."""
    yield msg
    if msg.get_content_maintype() == "multipart" and depth < _MAX_DEPTH:
        payload = msg.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from _parts(part, depth + 1)


def _status_text(part: Message) -> str:
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


def _field_groups(text: str) -> list[dict[str, str]]:
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
    recipient = _address_field(group.get("original-recipient", "")) or _address_field(
        group.get("final-recipient", "")
    )
    remote = _clean(group.get("remote-mta", ""))
    remote = (remote.partition(";")[2] or remote).strip().split(" ")[0].rstrip(".")
    return ReportedFailure(recipient, "failed", status or "5.0.0", diagnostic, remote)


def _first_status(text: str, *, anchored: bool) -> str:
    m = _STATUS.match(text.strip()) if anchored else _STATUS.search(text)
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else ""


def _address_field(value: str) -> str:
    """``type; address`` -> normalised address, or "" if it does not hold one."""
    kind, sep, addr = _clean(value).partition(";")
    if not sep:
        kind, addr = "rfc822", kind
    addr = addr.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        addr = _XTEXT_CHAR.sub(_unxtext, addr)
    return _normalise_address(addr)


def _unxtext(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return m.group(0)
    return chr(code)


def _normalise_address(addr: str) -> str:
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
    """Gate for the text scan: an auto-reply that mentions "version 5.1.1" is no bounce."""
    if msg.get_content_type() == "multipart/report" or msg.get("x-failed-recipients"):
        return True
    sender = _clean(str(msg.get("from", "")))
    subject = _clean(str(msg.get("subject", "")))
    return bool(_BOUNCE_FROM.search(sender) or _BOUNCE_SUBJECT.search(subject))


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
    for part in _parts(msg):
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
            if _ORIGINAL_FOLLOWS.match(line):
                break
            lines.append(line)
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
    m = _ADDRESS.search(text)
    return _normalise_address(m.group(0)) if m else ""

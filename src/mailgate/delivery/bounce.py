"""Delivery status notifications (RFC 3464) out, and VERP return paths.

Pure functions, no I/O: the delivery loop decides when a DSN is due and queues the bytes
built here; the bounce ingress maps a VERP address back to the delivery with
:func:`parse_verp` and reads what comes back with :mod:`mailgate.delivery.reports`.
Every value put into a header is sanitised.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import logging
import re
import secrets
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime

from mailgate.delivery.report_text import STATUS as _STATUS
from mailgate.delivery.report_text import clean as _clean
from mailgate.delivery.report_text import truncate as _truncate
from mailgate.headers import scan
from mailgate.ids import new_id
from mailgate.models import NewMessage

log = logging.getLogger(__name__)

__all__ = [
    "FailedRecipient",
    "build_dsn",
    "parse_verp",
    "should_send_dsn",
    "verp_address",
]

# RFC 3464 2.3.3 action values.
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}

# Parts are encoded with the SMTP policy (QP lines <= 76); the whole message is written with
# a 998-octet limit so that the delivery-status fields, folded here, are never refolded by
# the email package into RFC 2047 encoded-words (not allowed in DSN fields).
_PART_POLICY = email.policy.SMTP
_OUT_POLICY = email.policy.SMTP.clone(max_line_length=998)

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


def _clean_hostname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "", name or "").strip(".")


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


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


def dsn_message(
    *,
    original: bytes,
    queue_id: str,
    envelope_sender: str,
    hostname: str,
    failures: Sequence[FailedRecipient],
    now: float,
    arrival_date: float,
) -> NewMessage | None:
    """The DSN for ``failures`` as a message to queue (null sender, to the original's
    envelope sender); None, logged, when the original cannot be reported on."""
    try:
        raw = build_dsn(
            original=original,
            queue_id=queue_id,
            envelope_sender=envelope_sender,
            hostname=hostname,
            failures=failures,
            now=now,
            arrival_date=arrival_date,
        )
    except ValueError:
        log.exception("could not build a DSN for %s", queue_id)
        return None
    return NewMessage(
        id=new_id(),
        created_at=now,
        sender="",
        recipients=(envelope_sender,),
        raw=raw,
        subject="Undelivered Mail Returned to Sender",
        message_id_header=scan(raw).message_id,
        source="dsn",
        credential=f"dsn:{queue_id}",
    )

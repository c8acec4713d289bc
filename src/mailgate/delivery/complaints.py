"""Complaints that come back by mail: RFC 5965 Abuse Reporting Format reports, as feedback
loops send them. Pure functions, no I/O, and never raising on the untrusted input: a report
that cannot be read is no report. The MIME and field readers are the bounces' (reports.py).
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

from mailgate.delivery.report_text import clean as _clean
from mailgate.delivery.reports import (
    ADDRESS,
    address_field,
    field_groups,
    normalise_address,
    report_parts,
    status_text,
)

__all__ = ["Complaint", "is_feedback_report", "parse_arf"]


@dataclass(frozen=True, slots=True)
class Complaint:
    """What an ARF report says about the message a recipient complained about.

    Every field may be "": feedback loops redact recipients, and many omit optional fields.
    """

    feedback_type: str  # abuse, fraud, virus, other, not-spam, auth-failure (lower case)
    user_agent: str  # the reporter, e.g. "Yahoo!-Mail-Feedback/2.0"
    original_mail_from: str  # the original's envelope sender: our VERP address, if used
    original_rcpt_to: str  # the complaining recipient, when not redacted
    message_id: str  # the original's Message-ID, with its angle brackets
    return_path: str  # the original's Return-Path (the envelope sender again)
    original_to: str  # the original's To address, when there was one address
    source_ip: str = ""
    arrival_date: str = ""


_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
_ANGLE_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_MSG_ID = re.compile(r"<[^<>\s]{1,900}>")


def is_feedback_report(data: bytes) -> bool:
    """Whether ``data`` is an ARF report (multipart/report; report-type=feedback-report)."""
    try:
        msg = email.message_from_bytes(bytes(data), policy=email.policy.compat32)
        report_type = str(msg.get_param("report-type", "") or "").strip().lower()
        return msg.get_content_type() == "multipart/report" and report_type == "feedback-report"
    except Exception:  # untrusted input: unreadable is not a report
        return False


def parse_arf(data: bytes) -> Complaint | None:
    """The complaint an ARF report makes, or None when ``data`` is none (or unreadable).

    The machine-readable part (message/feedback-report) is required; the original (third
    part) may be a whole message/rfc822, its headers only (text/rfc822-headers), or absent.
    Its Message-ID and Return-Path are what match the report to our delivery when the
    feedback fields are incomplete (Original-Mail-From is optional, recipients redacted).
    """
    try:
        msg = email.message_from_bytes(bytes(data), policy=email.policy.compat32)
        parts = list(report_parts(msg))
        report = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
        if report is None:
            return None
        fields = _feedback_fields(status_text(report))
        if not fields.get("feedback-type"):
            return None  # RFC 5965 3.1: the one field every report has
        original = next((p for p in parts if p.get_content_type() in _ORIGINAL_TYPES), None)
        headers = _original_headers(original) if original is not None else Message()
        return Complaint(
            feedback_type=_clean(fields["feedback-type"]).split(" ")[0].lower()[:32],
            user_agent=_clean(fields.get("user-agent", ""))[:200],
            original_mail_from=_angle_address(fields.get("original-mail-from", "")),
            original_rcpt_to=_angle_address(fields.get("original-rcpt-to", "")),
            message_id=_message_id(str(headers.get("message-id", ""))),
            return_path=_angle_address(str(headers.get("return-path", ""))),
            original_to=_single_address(str(headers.get("to", ""))),
            source_ip=_clean(fields.get("source-ip", ""))[:64],
            arrival_date=_clean(fields.get("arrival-date", ""))[:64],
        )
    except Exception:  # untrusted input from anywhere: a report we cannot read is none
        return None


def _feedback_fields(text: str) -> dict[str, str]:
    """The report's fields by lower-case name, the first of each (RFC 5965 3.1 allows some
    to repeat, such as Original-Rcpt-To: the first recipient is the one we can act on)."""
    fields: dict[str, str] = {}
    for group in field_groups(text):
        for name, value in group.items():
            fields.setdefault(name, value)
    return fields


def _original_headers(part: Message) -> Message:
    """The header block of the returned original, as a message of headers only."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the parser made it a message
        inner = payload[0] if payload and isinstance(payload[0], Message) else Message()
        return inner
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return Message()
    return email.message_from_bytes(raw.lstrip(b"\r\n"), policy=email.policy.compat32)


def _angle_address(value: str) -> str:
    """The address of a field such as ``<a@b>`` or ``rfc822; a@b``, normalised, or ""."""
    text = _clean(value)
    m = _ANGLE_ADDR.search(text)
    if m:
        return normalise_address(m.group(1))
    return address_field(text)


def _single_address(value: str) -> str:
    """The address of a To field that names exactly one; "" for none or several."""
    found = ADDRESS.findall(_clean(value))
    return normalise_address(found[0]) if len(set(a.lower() for a in found)) == 1 else ""


def _message_id(value: str) -> str:
    m = _MSG_ID.search(_clean(value))
    return m.group(0) if m else ""

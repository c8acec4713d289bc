"""JSON fields -> RFC 5322 bytes, with the standard ``email`` package.

text only, html only, multipart/alternative, multipart/related for inline (cid:) images,
multipart/mixed for attachments. Header values are checked for control characters
before they reach ``email`` (CPython 3.11.7 has header-folding injection bugs,
CVE-2024-6923), and addresses arrive already validated (see api_validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str  # validated addr-spec (ASCII, or UTF-8 when SMTPUTF8 is needed)
    name: str = ""

    @property
    def needs_smtputf8(self) -> bool:
        return not self.address.isascii()


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str = ""  # set: an inline part referenced as cid:<content_id>


@dataclass(frozen=True, slots=True)
class MessageSpec:
    sender: Mailbox
    to: Sequence[Mailbox]
    subject: str
    cc: Sequence[Mailbox] = ()
    html: str = ""
    text: str = ""
    headers: Sequence[tuple[str, str]] = ()
    attachments: Sequence[Attachment] = field(default_factory=tuple)


def _address(box: Mailbox) -> Address:
    local, _, domain = box.address.rpartition("@")
    return Address(display_name=box.name, username=local, domain=domain)


def _split_type(content_type: str) -> tuple[str, str]:
    maintype, _, subtype = content_type.partition("/")
    return (maintype or "application"), (subtype or "octet-stream")


def build(spec: MessageSpec) -> bytes:
    """The message as CRLF bytes, without Message-ID and Date (accept() adds those)."""
    utf8 = spec.sender.needs_smtputf8 or any(b.needs_smtputf8 for b in (*spec.to, *spec.cc))
    policy = SMTPUTF8 if utf8 else SMTP
    msg = EmailMessage(policy=policy)
    msg["From"] = _address(spec.sender)
    msg["To"] = [_address(b) for b in spec.to]
    if spec.cc:
        msg["Cc"] = [_address(b) for b in spec.cc]
    msg["Subject"] = spec.subject
    for name, value in spec.headers:
        msg[name] = value

    inline = [a for a in spec.attachments if a.content_id]
    attached = [a for a in spec.attachments if not a.content_id]
    if spec.text and spec.html:
        msg.set_content(spec.text)
        msg.add_alternative(spec.html, subtype="html")
    elif spec.html:
        msg.set_content(spec.html, subtype="html")
    else:
        msg.set_content(spec.text)
    if inline:
        html_part = msg.get_body(preferencelist=("html",))
        target = html_part if html_part is not None else msg
        for a in inline:
            maintype, subtype = _split_type(a.content_type)
            target.add_related(
                a.content,
                maintype=maintype,
                subtype=subtype,
                cid=f"<{a.content_id}>",
                filename=a.filename or None,
                disposition="inline",
            )
    for a in attached:
        maintype, subtype = _split_type(a.content_type)
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg.as_bytes(policy=policy)

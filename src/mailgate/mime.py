"""JSON fields -> RFC 5322 bytes, with the standard ``email`` package.

text only, html only, multipart/alternative, multipart/related for inline (cid:) images,
multipart/mixed for attachments. Header values are checked for control characters
before they reach ``email`` (CPython 3.11.7 has header-folding injection bugs,
CVE-2024-6923), and addresses arrive already validated (see api_validation).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.charset import QP, Charset
from email.encoders import encode_base64
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTPUTF8, Compat32
from email.utils import formataddr


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str  # validated addr-spec (ASCII, or UTF-8 when SMTPUTF8 is needed)
    name: str = ""

    @property
    def needs_smtputf8(self) -> bool:
        return not self.address.isascii()


_BASE64 = re.compile(r"[A-Za-z0-9+/]*=*")
_LINE = 76  # base64 characters per MIME line (RFC 2045)
_CHUNK = _LINE * 8192  # characters turned into MIME lines at a time (about 620 KB)


def _tail_start(text: str) -> int:
    """Where the last whole group of letters before the final partial one starts."""
    letters = len(text.rstrip("="))
    return max(0, letters - letters % 4 - 4)


@dataclass(frozen=True, slots=True)
class Base64Text:
    """Attachment content as the API received it, base64, checked but never decoded.

    A 9 MB attachment arrives as a 12 MB JSON string; decoding it and letting ``email``
    encode it again would hold the decoded bytes, a re-encoded string and the generator's
    copies at once. It only needs cutting into lines, which build() does straight into
    the message's bytes.
    """

    text: str

    @classmethod
    def parse(cls, text: str) -> Base64Text:
        """ValueError unless ``b64decode(text, validate=True)`` accepts ``text``.

        Only letters, then padding: what strict decoding checks beyond that is in the last
        groups, so only those are decoded.
        """
        if _BASE64.fullmatch(text) is None:
            raise ValueError("not valid base64")
        try:
            binascii.a2b_base64(text[_tail_start(text) :].encode("ascii"), strict_mode=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64: {exc}") from None
        letters = len(text.rstrip("="))
        padded = letters + -letters % 4
        return cls(text if len(text) == padded else text[:letters] + "=" * (padded - letters))

    @property
    def size(self) -> int:
        """The decoded size in bytes."""
        start = _tail_start(self.text)
        return start // 4 * 3 + len(binascii.a2b_base64(self.text[start:].encode("ascii")))

    def decoded(self) -> bytes:
        return base64.b64decode(self.text)

    def lines(self) -> Iterator[bytes]:
        """The content as CRLF-separated MIME lines, a chunk at a time (no final CRLF)."""
        text = self.text
        for start in range(0, len(text), _CHUNK):
            chunk = text[start : start + _CHUNK].encode("ascii")
            lead = b"\r\n" if start else b""
            yield lead + b"\r\n".join([chunk[i : i + _LINE] for i in range(0, len(chunk), _LINE)])


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes | Base64Text
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
    if spec.sender.needs_smtputf8 or any(b.needs_smtputf8 for b in (*spec.to, *spec.cc)):
        return _build_smtputf8(spec)
    return _build_fast(spec)


# --------------------------------------------------------- the common case: ASCII addresses
#
# email.mime (the compat32 API) with headers encoded here: several times faster than the
# EmailMessage API, whose header registry parses every header it is given again. This is
# what keeps a batch of 1000 messages well under half a second.


class _PreencodedPolicy(Compat32):
    """compat32 with CRLF that writes already encoded, short ASCII header lines as they are.

    compat32 folds every header through email.header.Header, even a plain ASCII one;
    ours are encoded here (RFC 2047) or validated by the API, so that work is wasted.
    """

    def fold_binary(self, name: str, value: str) -> bytes:  # type: ignore[override]
        plain = isinstance(value, str) and value.isascii() and len(name) + len(value) < 996
        if plain and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_CRLF_POLICY = _PreencodedPolicy(linesep="\r\n")
_QP_UTF8 = Charset("utf-8")
_QP_UTF8.header_encoding = QP
_QP_UTF8.body_encoding = QP


def _header(value: str) -> str:
    """A header value: as is when ASCII, else RFC 2047 encoded words (folded)."""
    if value.isascii():
        return value
    return Header(value, _QP_UTF8, maxlinelen=76).encode(linesep="\r\n")


def _mailbox(box: Mailbox) -> str:
    return formataddr((box.name, box.address), charset="utf-8") if box.name else box.address


def _text_part(body: str, subtype: str) -> MIMEText:
    needs_qp = not body.isascii() or any(len(line) > 998 for line in body.splitlines())
    if not body.endswith("\n"):
        body += "\n"
    part = MIMEText(body, subtype, _QP_UTF8 if needs_qp else "us-ascii")
    del part["MIME-Version"]  # only the top level carries it
    return part


def _binary_part(a: Attachment, disposition: str, marker: str) -> MIMEBase:
    """The part; base64 content is left as ``marker`` for build() to put in."""
    maintype, subtype = _split_type(a.content_type)
    part = MIMEBase(maintype, subtype)
    del part["MIME-Version"]
    if isinstance(a.content, Base64Text):
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(marker)
    else:
        part.set_payload(a.content)
        encode_base64(part)
    if a.filename:
        name: str | tuple[str, str, str] = (
            a.filename if a.filename.isascii() else ("utf-8", "", a.filename)
        )
        part.add_header("Content-Disposition", disposition, filename=name)
    else:
        part.add_header("Content-Disposition", disposition)
    if a.content_id:
        part.add_header("Content-ID", f"<{a.content_id}>")
    return part


def _multipart(subtype: str) -> MIMEMultipart:
    # A random boundary set here: the generator would otherwise compile a regular
    # expression per message to check its own. 128 random bits cannot occur in the parts.
    part = MIMEMultipart(subtype, boundary=f"=_mg_{secrets.token_hex(16)}")
    del part["MIME-Version"]
    return part


def _build_fast(spec: MessageSpec) -> bytes:
    marker = f"mg-base64-{secrets.token_hex(16)}"  # cannot occur in the rest of the message
    inline = [a for a in spec.attachments if a.content_id]
    attached = [a for a in spec.attachments if not a.content_id]
    html: Message | None = _text_part(spec.html, "html") if spec.html else None
    if html is not None and inline:
        related = _multipart("related")
        related.attach(html)
        for a in inline:
            related.attach(_binary_part(a, "inline", marker))
        html = related
    text = _text_part(spec.text, "plain") if spec.text else None
    body: Message
    if text is not None and html is not None:
        body = _multipart("alternative")
        body.attach(text)
        body.attach(html)
    else:
        body = html if html is not None else text  # type: ignore[assignment]
    if attached:
        mixed = _multipart("mixed")
        mixed.attach(body)
        for a in attached:
            mixed.attach(_binary_part(a, "attachment", marker))
        body = mixed
    # The top-level headers go first, in the usual order.
    top = Message()
    top["From"] = _mailbox(spec.sender)
    top["To"] = ", ".join(_mailbox(b) for b in spec.to)
    if spec.cc:
        top["Cc"] = ", ".join(_mailbox(b) for b in spec.cc)
    top["Subject"] = _header(spec.subject)
    for name, value in spec.headers:
        top[name] = _header(value)
    top["MIME-Version"] = "1.0"
    for name, value in body.items():
        top[name] = value
    top.set_payload(body.get_payload())
    skeleton = top.as_bytes(policy=_CRLF_POLICY)
    contents = [a.content for a in (*inline, *attached) if isinstance(a.content, Base64Text)]
    if not contents:
        return skeleton
    return _fill(skeleton, marker.encode("ascii"), contents)


def _fill(skeleton: bytes, marker: bytes, contents: Sequence[Base64Text]) -> bytes:
    """``skeleton`` with each ``marker`` replaced by the next content's lines, written into
    one buffer of the final size: the message exists once, not once more as pieces."""
    pieces = skeleton.split(marker)
    if len(pieces) != len(contents) + 1:
        raise AssertionError("a base64 part's marker is missing from the message")
    sizes = [len(c.text) + 2 * ((len(c.text) - 1) // _LINE) if c.text else 0 for c in contents]
    total = sum(len(p) for p in pieces) + sum(sizes)
    out = io.BytesIO()
    out.seek(total - 1)
    out.write(b"\0")  # allocates the final size once: getvalue() then hands it over uncopied
    out.seek(0)
    out.write(pieces[0])
    for content, piece in zip(contents, pieces[1:], strict=True):
        for lines in content.lines():
            out.write(lines)
        out.write(piece)
    if out.tell() != total:
        raise AssertionError("a base64 part's size was miscounted")
    return out.getvalue()


# ------------------------------------------------ internationalised addresses (SMTPUTF8)


def _build_smtputf8(spec: MessageSpec) -> bytes:
    """UTF-8 headers as RFC 6532 allows; the EmailMessage API does that right."""
    policy = SMTPUTF8
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
                _bytes(a.content),
                maintype=maintype,
                subtype=subtype,
                cid=f"<{a.content_id}>",
                filename=a.filename or None,
                disposition="inline",
            )
    for a in attached:
        maintype, subtype = _split_type(a.content_type)
        msg.add_attachment(
            _bytes(a.content), maintype=maintype, subtype=subtype, filename=a.filename
        )
    return msg.as_bytes(policy=policy)


def _bytes(content: bytes | Base64Text) -> bytes:
    return content.decoded() if isinstance(content, Base64Text) else content

"""JSON fields -> RFC 5322 bytes.

text only, html only, multipart/alternative, multipart/related for inline (cid:) images,
multipart/mixed for attachments. With ASCII addresses the message is written here (see
_build_fast); with internationalised ones by the ``email`` package's EmailMessage API.
Header values are checked for control characters before they get here (CPython 3.11.7 has
header-folding injection bugs, CVE-2024-6923), and addresses arrive already validated
(see submission/prepare.py).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Compat32
from email.utils import encode_rfc2231, formataddr, quote

from mailgate.ids import random_hex


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


@dataclass(slots=True)  # a record: not frozen, see models.py
class MessageSpec:
    sender: Mailbox
    to: Sequence[Mailbox]
    subject: str
    cc: Sequence[Mailbox] = ()
    html: str = ""
    text: str = ""
    headers: Sequence[tuple[str, str]] = ()
    attachments: Sequence[Attachment] = field(default_factory=tuple)
    reply_to: Mailbox | None = None


def _address(box: Mailbox) -> Address:
    local, _, domain = box.address.rpartition("@")
    return Address(display_name=box.name, username=local, domain=domain)


def _split_type(content_type: str) -> tuple[str, str]:
    maintype, _, subtype = content_type.partition("/")
    return (maintype or "application"), (subtype or "octet-stream")


def build(spec: MessageSpec) -> bytes:
    """The message as CRLF bytes, without Message-ID and Date (accept() adds those)."""
    boxes = (spec.sender, *spec.to, *spec.cc, *((spec.reply_to,) if spec.reply_to else ()))
    if any(b.needs_smtputf8 for b in boxes):
        return _build_smtputf8(spec)
    return _build_fast(spec)


# --------------------------------------------------------- the common case: ASCII addresses
#
# Written here, not by email.mime and its generator: the parts are ours (text, html, base64
# attachments, their multiparts), so their headers are known strings, and what the email
# package spent per message (Charset objects, parameter parsing and re-parsing, the
# generator's walk: about 16% of the relay's CPU per API send) is not needed. Header lines
# that are not short plain ASCII are still folded by compat32 (RFC 2047, long lines).


class _PreencodedPolicy(Compat32):
    """compat32 with CRLF that writes already encoded, short ASCII header lines as they are.

    compat32 folds every header through email.header.Header, even a plain ASCII one;
    ours are encoded here (RFC 2047) or validated by the API, so that work is wasted.
    """

    def fold_binary(self, name: str, value: str) -> bytes:  # type: ignore[override]
        plain = isinstance(value, str) and value.isascii() and len(name) + len(value) < 996
        if plain and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        folded = super().fold_binary(name, value)
        if len(folded) > _MAX_LINE and max(map(len, folded.split(b"\r\n"))) > _MAX_LINE:
            # compat32 folds only at spaces: a longer run (a subject without any, a long
            # encoded name, an attachment's RFC 2231 filename) is split by the email
            # package's modern folder, into encoded words or parameter continuations.
            return SMTP.fold_binary(name, value)
        return folded


_MAX_LINE = 998  # characters in a line of a message, CRLF not counted (RFC 5322 2.1.1)
_CRLF_POLICY = _PreencodedPolicy(linesep="\r\n")
_QP_UTF8 = Charset("utf-8")
_QP_UTF8.header_encoding = QP
_QP_UTF8.body_encoding = QP
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what the email generator turns into CRLF


@dataclass(slots=True)
class _Entity:
    """A MIME entity: its header fields and either its content (CRLF text as bytes, or
    base64 content to be cut into lines) or its parts, between ``boundary`` lines."""

    headers: list[tuple[str, str]]
    content: bytes | Base64Text = b""
    parts: list[_Entity] | None = None
    boundary: str = ""


def _header(value: str) -> str:
    """A header value: as is when ASCII, else RFC 2047 encoded words (folded)."""
    if value.isascii():
        return value
    return Header(value, _QP_UTF8, maxlinelen=76).encode(linesep="\r\n")


def _mailbox(box: Mailbox) -> str:
    if not box.name:
        return box.address
    if box.name.isascii() and box.name.replace(" ", "").isalnum():
        # What formataddr writes for such a name (nothing to quote, escape or encode),
        # without its regular expressions: the usual "First Last".
        return f"{box.name} <{box.address}>"
    return formataddr((box.name, box.address), charset="utf-8")


def _text_part(body: str, subtype: str) -> _Entity:
    """7bit US-ASCII when it can be, else UTF-8 quoted-printable (as email.mime.MIMEText
    with those charsets writes them)."""
    needs_qp = not body.isascii() or (len(body) > 998 and max(map(len, body.splitlines())) > 998)
    if not body.endswith("\n"):
        body += "\n"
    if needs_qp:
        body = quoprimime.body_encode(body.encode("utf-8").decode("latin-1"))
        charset, encoding = "utf-8", "quoted-printable"
    else:
        charset, encoding = "us-ascii", "7bit"
    headers = [
        ("Content-Type", f'text/{subtype}; charset="{charset}"'),
        ("Content-Transfer-Encoding", encoding),
    ]
    crlf = body.replace("\n", "\r\n") if "\r" not in body else _NEWLINE.sub("\r\n", body)
    return _Entity(headers, crlf.encode("ascii"))


def _binary_part(a: Attachment, disposition: str) -> _Entity:
    maintype, subtype = _split_type(a.content_type)
    if a.filename.isascii():
        disposition += f'; filename="{quote(a.filename)}"' if a.filename else ""
    else:  # RFC 2231, as email's add_header writes a (charset, language, value) parameter
        disposition += f"; filename*={encode_rfc2231(a.filename, 'utf-8', '')}"
    headers = [
        ("Content-Type", f"{maintype}/{subtype}"),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", disposition),
    ]
    if a.content_id:
        headers.append(("Content-ID", f"<{a.content_id}>"))
    content = a.content
    if not isinstance(content, Base64Text):
        content = Base64Text(base64.b64encode(content).decode("ascii"))
    return _Entity(headers, content)


def _multipart(subtype: str, parts: list[_Entity]) -> _Entity:
    # 128 random bits cannot occur in the parts.
    boundary = f"=_mg_{random_hex(16)}"
    headers = [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')]
    return _Entity(headers, parts=parts, boundary=boundary)


def _build_fast(spec: MessageSpec) -> bytes:
    inline = [_binary_part(a, "inline") for a in spec.attachments if a.content_id]
    attached = [_binary_part(a, "attachment") for a in spec.attachments if not a.content_id]
    html = _text_part(spec.html, "html") if spec.html else None
    if html is not None and inline:
        html = _multipart("related", [html, *inline])
    elif inline:  # no html to show them in: still sent, beside the text
        attached = inline + attached
    text = _text_part(spec.text, "plain") if spec.text else None
    if text is not None and html is not None:
        body = _multipart("alternative", [text, html])
    else:
        body = html if html is not None else text  # type: ignore[assignment]
    if attached:
        body = _multipart("mixed", [body, *attached])
    # The top-level headers go first, in the usual order, then the body's own.
    top = [("From", _mailbox(spec.sender)), ("To", ", ".join(_mailbox(b) for b in spec.to))]
    if spec.cc:
        top.append(("Cc", ", ".join(_mailbox(b) for b in spec.cc)))
    if spec.reply_to is not None:
        top.append(("Reply-To", _mailbox(spec.reply_to)))
    top.append(("Subject", _header(spec.subject)))
    top.extend((name, _header(value)) for name, value in spec.headers)
    top.append(("MIME-Version", "1.0"))
    pieces: list[bytes | Base64Text] = []
    _write(_Entity(top + body.headers, body.content, body.parts, body.boundary), pieces)
    return _join(pieces)


def _write(entity: _Entity, out: list[bytes | Base64Text]) -> None:
    """``entity`` as the pieces of its wire form (as email's generator lays it out)."""
    fold = _CRLF_POLICY.fold_binary
    out.append(b"".join([fold(name, value) for name, value in entity.headers]) + b"\r\n")
    if entity.parts is None:
        out.append(entity.content)
        return
    boundary = entity.boundary.encode("ascii")
    for i, part in enumerate(entity.parts):
        out.append((b"\r\n--" if i else b"--") + boundary + b"\r\n")
        _write(part, out)
    out.append(b"\r\n--" + boundary + b"--\r\n")


def _join(pieces: Sequence[bytes | Base64Text]) -> bytes:
    """The pieces in one buffer of the final size, base64 content cut into lines straight
    into it: a big attachment is not held once more as lines, nor the message as pieces."""
    sizes = [
        len(p) if isinstance(p, bytes) else len(p.text) + 2 * ((len(p.text) - 1) // _LINE)
        for p in pieces
        if isinstance(p, bytes) or p.text
    ]
    total = sum(sizes)
    out = io.BytesIO()
    out.seek(total - 1)
    out.write(b"\0")  # allocates the final size once: getvalue() then hands it over uncopied
    out.seek(0)
    for piece in pieces:
        if isinstance(piece, bytes):
            out.write(piece)
        else:
            for lines in piece.lines():
                out.write(lines)
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
    if spec.reply_to is not None:
        msg["Reply-To"] = _address(spec.reply_to)
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

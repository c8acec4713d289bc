"""One recipient's copy of a tracked message: open pixel, tracked links, List-Unsubscribe.

Runs in the delivery process, per recipient and attempt, on the stored message (shared by
all its recipients); the DKIM signature is then made over this copy. Only the bodies of
text/html and text/plain parts change (decoded from and encoded back to their transfer
encoding); every other byte of the message, its headers and its other parts (attachments
included) is kept as it is, so the result is the same message a client would expect.

Links: ``href`` of ``<a>`` and ``<area>`` in html, bare http(s) URLs in text. Left alone:
``mailto:``, ``tel:``, anchors and any other scheme than http(s), links in a tag marked
``data-mailgate-notrack``, and links that already point at the relay's public URL.
"""

from __future__ import annotations

import base64
import email.quoprimime
import html
import quopri
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailgate.events.tokens import MAX_URL, Signer

_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_HAS_LIST_UNSUBSCRIBE = re.compile(rb"(?im)^list-unsubscribe[ \t]*:")
_CTE_HEADER = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:.*(?:\r\n[ \t].*)*\r\n")
_A_TAG = re.compile(rb"<(?:a|area)\b[^>]*>", re.I)
_HREF = re.compile(rb"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.I)
_TEXT_URL = re.compile(rb"""https?://[^\s<>"'\[\]{}|\\^`]+""", re.I)
_BODY_END = re.compile(rb"</body\s*>", re.I)
_TRAILING = b".,;:!?"
# A browser drops ASCII tabs and line breaks anywhere in a URL (WHATWG URL parsing) and
# follows the link without them: so does the signed URL, which becomes a Location header.
TAB_NEWLINE = re.compile(r"[\t\n\r]")
_MAX_LINE = 998

# A part's body (bytes in its charset, the second argument) rewritten.
Rewrite = Callable[[bytes, str], bytes]
# A link's URL (decoded) -> the tracked URL that replaces it, or None to leave it.
Link = Callable[[str], bytes | None]


@dataclass(frozen=True, slots=True)
class Options:
    """What is added to a message's copies: resolved once at accept (:meth:`resolve`) and
    stored on ``messages.tracking``, so a later change of ``[tracking]`` does not change
    mail already queued."""

    opens: bool = False
    clicks: bool = False
    unsubscribe: bool = False

    @classmethod
    def resolve(
        cls, requested: Mapping[str, bool] | None, defaults: Options, *, bulk: bool
    ) -> Options:
        """The message's own options over the ``[tracking]`` defaults.

        List-Unsubscribe (unless asked for or against explicitly) goes on tracked mail and
        on bulk mail: a batch's (a job's) or, with ``[tracking] unsubscribe``, all mail. A
        request that turns both opens and clicks off explicitly is transactional mail, to
        which nothing is added (the seed's promise), unless it asks for unsubscribe itself.
        """
        req = requested or {}
        opens = bool(req.get("opens", defaults.opens))
        clicks = bool(req.get("clicks", defaults.clicks))
        unsubscribe = req.get("unsubscribe")
        if unsubscribe is None:
            transactional = req.get("opens") is False and req.get("clicks") is False
            unsubscribe = opens or clicks or (not transactional and (bulk or defaults.unsubscribe))
        return cls(opens, clicks, bool(unsubscribe))

    def stored(self) -> dict[str, bool] | None:
        """For ``messages.tracking``: None (stored as ``{}``) when nothing is on."""
        if not (self.opens or self.clicks or self.unsubscribe):
            return None
        return {"opens": self.opens, "clicks": self.clicks, "unsubscribe": self.unsubscribe}

    @classmethod
    def of(cls, stored: dict[str, object] | None) -> Options | None:
        """From ``messages.tracking``; None when nothing is to be added."""
        if not stored:
            return None
        got = cls(
            bool(stored.get("opens")), bool(stored.get("clicks")), bool(stored.get("unsubscribe"))
        )
        return got if (got.opens or got.clicks or got.unsubscribe) else None


class Personalizer:
    def __init__(self, signer: Signer, public_url: str, bounce_domain: str) -> None:
        self._signer = signer
        self._base = public_url.rstrip("/")
        self._bounce_domain = bounce_domain

    def unsubscribe_headers(self, message_id: str, rcpt_idx: int) -> bytes:
        token = self._signer.unsubscribe_token(message_id, rcpt_idx)
        return (
            f"List-Unsubscribe: <{self._base}/u/{token}>,\r\n"
            f" <mailto:unsubscribe+{token}@{self._bounce_domain}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ).encode()

    def personalize(self, raw: bytes, message_id: str, rcpt_idx: int, options: Options) -> bytes:
        """The message as this recipient gets it."""
        raw = _crlf(raw)
        end = raw.find(b"\r\n\r\n")
        head = raw if end < 0 else raw[: end + 2]
        added = b""
        if options.unsubscribe and not _HAS_LIST_UNSUBSCRIBE.search(head):
            added = self.unsubscribe_headers(message_id, rcpt_idx)
        if not (options.opens or options.clicks) or end < 0:
            return added + raw

        def link(url: str) -> bytes | None:
            url = TAB_NEWLINE.sub("", url)
            if not url.lower().startswith(("http://", "https://")) or url.startswith(self._base):
                return None
            if len(url.encode()) > MAX_URL:
                return None
            token = self._signer.click_token(message_id, rcpt_idx, url)
            return f"{self._base}/t/c/{token}".encode()

        html_fn: Rewrite = lambda body, charset: body  # noqa: E731
        if options.clicks:
            html_fn = lambda body, charset: _html_links(body, charset, link)  # noqa: E731
        if options.opens:
            pixel = (
                f'<img src="{self._base}/t/o/{self._signer.open_token(message_id, rcpt_idx)}"'
                ' width="1" height="1" alt="" style="display:block;border:0;width:1px;'
                'height:1px" />'
            ).encode()
            links = html_fn
            html_fn = lambda body, charset: _add_pixel(links(body, charset), pixel)  # noqa: E731
        text_fn: Rewrite | None = None
        if options.clicks:
            text_fn = lambda body, charset: _text_links(body, charset, link)  # noqa: E731
        return added + _entity(raw, html_fn, text_fn)


def _crlf(raw: bytes) -> bytes:
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") == crlf == raw.count(b"\n"):
        return raw
    return _LINE_END.sub(b"\r\n", raw)


def _html_links(body: bytes, charset: str, link: Link) -> bytes:
    def tag(m: re.Match[bytes]) -> bytes:
        text = m.group(0)
        if b"data-mailgate-notrack" in text.lower():
            return text

        def href(h: re.Match[bytes]) -> bytes:
            value = h.group(2) if h.group(2) is not None else h.group(3)
            if value is None:
                value = h.group(4)
            try:
                url = html.unescape(value.decode(charset)).strip()
            except UnicodeDecodeError:
                return h.group(0)
            new = link(url)
            if new is None:
                return h.group(0)
            return h.group(1) + b'"' + new + b'"'

        return _HREF.sub(href, text, count=1)

    return _A_TAG.sub(tag, body)


def _text_links(body: bytes, charset: str, link: Link) -> bytes:
    def url(m: re.Match[bytes]) -> bytes:
        found = m.group(0)
        core = _without_trailing(found)
        try:
            new = link(core.decode(charset))
        except UnicodeDecodeError:
            return found
        return found if new is None else new + found[len(core) :]

    return _TEXT_URL.sub(url, body)


def _without_trailing(url: bytes) -> bytes:
    """A URL in text without the punctuation after it: "see https://a.test/x." ends at x,
    but a closing parenthesis stays when it closes one in the URL (.../Foo_(bar))."""
    while url:
        last = url[-1:]
        if last in _TRAILING or (last == b")" and url.count(b"(") < url.count(b")")):
            url = url[:-1]
        else:
            break
    return url


def _add_pixel(body: bytes, pixel: bytes) -> bytes:
    ends = list(_BODY_END.finditer(body))
    if not ends:
        return body + pixel
    at = ends[-1].start()
    return body[:at] + pixel + body[at:]


def _headers(head: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n")


def _entity(entity: bytes, html_fn: Rewrite, text_fn: Rewrite | None, depth: int = 0) -> bytes:
    """``entity`` (headers, blank line, body) with its html/text parts rewritten."""
    end = entity.find(b"\r\n\r\n")
    if end < 0 or depth > 20:
        return entity
    head, body = entity[: end + 2], entity[end + 4 :]
    msg = _headers(head)
    ctype = msg.get_content_type()
    if ctype.startswith("multipart/"):
        boundary = msg.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            return entity
        return head + b"\r\n" + _multipart(body, boundary.encode(), html_fn, text_fn, depth)
    if msg.get_content_disposition() == "attachment":
        return entity
    if ctype == "text/html":
        fn = html_fn
    elif ctype == "text/plain" and text_fn is not None:
        fn = text_fn
    else:
        return entity
    charset = msg.get_content_charset() or "us-ascii"
    try:
        if "<a>".encode(charset) != b"<a>":
            return entity  # not ASCII-compatible (UTF-16...): the byte patterns do not apply
    except LookupError:
        return entity
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text labelled ASCII (common) is nearly always UTF-8
    cte = str(msg.get("content-transfer-encoding", "7bit")).strip().lower()
    new_head, new_body = _recode(head, body, cte, lambda b: fn(b, charset))
    return new_head + b"\r\n" + new_body


def _recode(
    head: bytes, body: bytes, cte: str, fn: Callable[[bytes], bytes]
) -> tuple[bytes, bytes]:
    if cte == "base64":
        try:
            decoded = base64.b64decode(body)
        except ValueError:
            return head, body
        return head, base64.encodebytes(fn(decoded)).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        decoded = quopri.decodestring(body).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        return head, _qp(fn(decoded))
    if cte not in ("7bit", "8bit", "binary", ""):
        return head, body
    new = fn(body)
    if any(len(line) > _MAX_LINE for line in new.split(b"\r\n")):
        # Longer links made a line too long for SMTP: quoted-printable folds it.
        cte_line = b"Content-Transfer-Encoding: quoted-printable\r\n"
        if _CTE_HEADER.search(head):
            head = _CTE_HEADER.sub(lambda _m: cte_line, head, count=1)
        else:
            head += cte_line
        return head, _qp(new)
    return head, new


def _qp(data: bytes) -> bytes:
    text = data.decode("latin-1")
    return email.quoprimime.body_encode(text, maxlinelen=76, eol="\r\n").encode("latin-1")


def _multipart(
    body: bytes, boundary: bytes, html_fn: Rewrite, text_fn: Rewrite | None, depth: int
) -> bytes:
    """Each part between the boundary lines rewritten; the delimiters, preamble and
    epilogue kept byte for byte."""
    delim = re.compile(rb"(?:^|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|$)")
    out: list[bytes] = []
    pos = 0
    inside = False
    for m in delim.finditer(body):
        segment = body[pos : m.start()]
        if inside and segment.startswith(b"\r\n"):
            segment = b"\r\n" + _entity(segment[2:], html_fn, text_fn, depth + 1)
        out.append(segment)
        out.append(m.group(0))
        pos = m.end()
        inside = m.group(1) is None
        if not inside:
            break
    out.append(body[pos:])
    return b"".join(out)

"""Tracking tokens and the per-recipient copy: what is rewritten, and what is left alone."""

from __future__ import annotations

import base64
import email
import email.policy
import re

import pytest

from mailgate import mime
from mailgate.events.rewrite import Options, Personalizer
from mailgate.events.tokens import Signer, new_key
from mailgate.ids import new_id

BASE = "https://t.example.com"


@pytest.fixture
def signer() -> Signer:
    return Signer(new_key())


def personalizer(signer: Signer) -> Personalizer:
    return Personalizer(signer, BASE + "/", "bounces.example.com")


def texts(raw: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return {
        p.get_content_type(): p.get_content()
        for p in msg.walk()
        if p.get_content_maintype() == "text"
    }


def test_tokens_name_message_recipient_and_kind(signer: Signer) -> None:
    mid = new_id()
    o, u = signer.open_token(mid, 7), signer.unsubscribe_token(mid, 7)
    assert len(o) == len(u) == 50 and o != u and o.islower()
    assert signer.check_open(o) is not None and signer.check_open(o).rcpt_idx == 7  # type: ignore[union-attr]
    assert signer.check_unsubscribe(o) is None  # a token of one kind is none of another
    assert signer.check_unsubscribe(u.upper()) is not None  # mail systems may change case
    for bent in ("+" + o[1:], o[:10] + "_" + o[11:], o[:-1] + "w", " " + o[1:], o[:-1] + "1"):
        assert signer.check_open(bent) is None, bent
    c = signer.click_token(mid, 1, "https://a.test/?q=1")
    assert signer.check_click(c).url == "https://a.test/?q=1"  # type: ignore[union-attr]
    assert Signer(new_key()).check_click(c) is None  # another relay's key


def test_click_url_cannot_be_swapped(signer: Signer) -> None:
    token = signer.click_token(new_id(), 0, "https://a.test/")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = raw[:31] + b"https://evil.test/"
    token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert signer.check_click(token) is None
    for junk in ("", "!!!", "A" * 200, "é" * 10):
        assert signer.check_click(junk) is None and signer.check_open(junk) is None


def test_options_resolution() -> None:
    off = Options()
    assert Options.resolve(None, off, bulk=False) == off
    assert Options.resolve({"opens": True}, off, bulk=False) == Options(True, False, True)
    assert Options.resolve(None, off, bulk=True) == Options(False, False, True)
    # The seed's transactional example: both off explicitly, nothing is added, batch or not.
    assert (
        Options.resolve({"opens": False, "clicks": False}, Options(True, True, True), bulk=True)
        == off
    )
    assert (
        Options.resolve({"unsubscribe": False, "clicks": True}, off, bulk=True).unsubscribe is False
    )
    assert Options.of(Options(False, False, False).stored()) is None


def test_html_and_text_links_pixel_and_headers(signer: Signer) -> None:
    html = (
        "<html><body><a href=\"https://a.test/x?y=1&amp;z=2\">a</a> <A HREF='http://b.test'>b</A> "
        '<a href="mailto:m@x.test">m</a> <a href="tel:+1">t</a> <a href="#s">s</a> '
        '<a data-mailgate-notrack href="https://keep.test/">k</a> '
        f'<a href="{BASE}/already">own</a></body></html>'
    )
    raw = mime.build(
        mime.MessageSpec(
            sender=mime.Mailbox("app@example.com"),
            to=[mime.Mailbox("r@x.test")],
            subject="s",
            html=html,
            text="Go to https://a.test/x, or (https://b.test/p). ftp://no.test",
        )
    )
    mid = new_id()
    out = personalizer(signer).personalize(raw, mid, 3, Options(True, True, True))
    assert out.startswith(b"List-Unsubscribe: <" + BASE.encode() + b"/u/")
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in out
    got = texts(out)
    links = re.findall(r'href="([^"]+)"', got["text/html"], re.I)
    clicks = [signer.check_click(u.rsplit("/", 1)[1]) for u in links if "/t/c/" in u]
    assert [c.url for c in clicks if c] == ["https://a.test/x?y=1&z=2", "http://b.test"]
    assert all(c and c.message_id == mid and c.rcpt_idx == 3 for c in clicks)
    for kept in ("mailto:m@x.test", "tel:+1", "#s", "https://keep.test/", f"{BASE}/already"):
        assert kept in links
    assert got["text/html"].count("/t/o/") == 1
    assert got["text/html"].index("/t/o/") < got["text/html"].index("</body>")
    text = got["text/plain"]
    urls = re.findall(r"https://t\.example\.com/t/c/[\w-]+", text)
    assert [signer.check_click(u.rsplit("/", 1)[1]).url for u in urls] == [  # type: ignore[union-attr]
        "https://a.test/x",
        "https://b.test/p",
    ]
    assert text.endswith("). ftp://no.test\n") or "ftp://no.test" in text


def test_nothing_added_when_off_and_own_header_kept(signer: Signer) -> None:
    raw = b"From: a@example.com\r\nList-Unsubscribe: <mailto:own@example.com>\r\n\r\nhi https://a.test\r\n"
    p = personalizer(signer)
    out = p.personalize(raw, new_id(), 0, Options(False, False, True))
    assert out == raw  # the message's own List-Unsubscribe wins
    out = p.personalize(raw, new_id(), 0, Options(False, True, False))
    assert out.count(b"List-Unsubscribe") == 1 and b"/t/c/" in out


def test_attachments_and_long_lines(signer: Signer) -> None:
    long_html = (
        "<p>" + " ".join(f'<a href="https://a.test/{i}">{i}</a>' for i in range(40)) + "</p>"
    )
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\npreamble\r\n--BB\r\n'
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + long_html.encode()
        + b"\r\n--BB\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: attachment; filename=a.txt\r\n\r\n"
        b"https://attached.test/\r\n--BB--\r\nepilogue\r\n"
    )
    out = personalizer(signer).personalize(raw, new_id(), 0, Options(False, True, False))
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    assert b"Content-Transfer-Encoding: quoted-printable" in out  # switched: lines too long
    assert b"https://attached.test/" in out and b"preamble" in out and b"epilogue" in out
    html = texts(out)["text/html"]
    assert html.count("/t/c/") == 40


def _tracked(signer: Signer, raw: bytes) -> tuple[bytes, list[str]]:
    """``raw`` with its links tracked, and the URLs signed in them, in order."""
    out = personalizer(signer).personalize(raw, new_id(), 0, Options(False, True, False))
    return out, _clicked(signer, out)


def _clicked(signer: Signer, out: bytes) -> list[str]:
    """The URLs signed in the tracked links of ``out``, in order."""
    got = texts(out)
    found = re.findall(r"https://t\.example\.com/t/c/([\w-]+)", "".join(got.values()))
    return [signer.check_click(token).url for token in found]  # type: ignore[union-attr]


def test_link_urls_are_decoded_in_their_part_s_charset(signer: Signer) -> None:
    """A non-ASCII link is signed as written (the click event shows it so), whatever the
    part's charset and transfer encoding; an entity beyond Latin-1 is no error."""
    raw = mime.build(
        mime.MessageSpec(
            sender=mime.Mailbox("app@example.com"),
            to=[mime.Mailbox("r@x.test")],
            subject="s",
            html='<a href="https://例え.jp/パス?q=ü">a</a> <a href="https://x.test/&#x4F8B;">b</a>',
            text="https://ünicode.example/ü",
        )
    )
    out = personalizer(signer).personalize(raw, new_id(), 0, Options(False, True, False))
    assert _clicked(signer, out) == [  # the text part first
        "https://ünicode.example/ü",
        "https://例え.jp/パス?q=ü",
        "https://x.test/例",
    ]
    latin = (
        b"From: a@example.com\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nhttps://latin.example/caf=E9\r\n"
    )
    assert _tracked(signer, latin)[1] == ["https://latin.example/café"]
    html = (
        b"From: a@example.com\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n"
        b'<a href="https://x.test/&#x4F8B;/caf\xe9">x</a>\r\n'
    )
    assert _tracked(signer, html)[1] == ["https://x.test/例/café"]


def test_tabs_and_line_breaks_leave_a_link_as_a_browser_reads_it(signer: Signer) -> None:
    raw = (
        b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<a href="https://crlf.example/&#13;&#10;Set-Cookie:%20pwn=1">a</a>\r\n'
        b'<a href="https://nl.example/a\r\nb">b</a> <a href="https://tab.example/\tc">c</a>\r\n'
    )
    assert _tracked(signer, raw)[1] == [
        "https://crlf.example/Set-Cookie:%20pwn=1",
        "https://nl.example/ab",
        "https://tab.example/c",
    ]


def test_a_url_in_text_keeps_a_parenthesis_it_opened(signer: Signer) -> None:
    raw = (
        b"From: a@example.com\r\n\r\nSee https://en.wikipedia.org/wiki/Foo_(bar), "
        b"(also https://b.test/p). And https://c.test/q_(x)y).\r\n"
    )
    out, urls = _tracked(signer, raw)
    assert urls == [
        "https://en.wikipedia.org/wiki/Foo_(bar)",
        "https://b.test/p",
        "https://c.test/q_(x)y",
    ]
    assert b", (also " in out and b"). And " in out and out.endswith(b").\r\n")


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("https://a.test/ok?x=1#f", "https://a.test/ok?x=1#f"),
        ("https://例え.jp/パス?q=ü", "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%C3%BC"),
        ("https://ü.test?x=ü", "https://xn--tda.test?x=%C3%BC"),
        ("https://u@ü.test:8080/a b", "https://u@xn--tda.test:8080/a%20b"),
        ("https://a.test/x\r\nSet-Cookie: a", "https://a.test/xSet-Cookie:%20a"),
        ("http://[::1]:80/\x00\x7f", "http://[::1]:80/%00%7F"),
    ],
)
def test_the_redirect_location_is_a_uri(url: str, header: str) -> None:
    from mailgate.ingress.http_tracking import location

    assert location(url) == header

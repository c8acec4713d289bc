"""The MIME builder: structure, encodings and line lengths, parsed back with ``email``."""

from __future__ import annotations

import email
import email.policy
from email.utils import formataddr

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime import Attachment, Mailbox, MessageSpec, _mailbox, build


def parse(data: bytes):  # type: ignore[no-untyped-def]
    return email.message_from_bytes(data, policy=email.policy.default)


def spec(**kw) -> MessageSpec:  # type: ignore[no-untyped-def]
    base = {"sender": Mailbox("a@example.com"), "to": [Mailbox("b@example.net")], "subject": "s"}
    return MessageSpec(**{**base, **kw})


def test_lines_are_crlf_and_short() -> None:
    data = build(spec(text="x" * 5000, html="<p>" + "y" * 3000 + "</p>", subject="z " * 300))
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parse(data)
    assert msg.get_body(("plain",)).get_content().rstrip("\r\n") == "x" * 5000
    assert msg["Subject"] == "z " * 300


def test_header_lines_without_spaces_are_split_under_998() -> None:
    """compat32 folds only at spaces: a subject or header without any, a long non-ASCII
    name (one encoded word) and a long non-ASCII filename still fit RFC 5322's lines."""
    long_name = "é" * 250
    data = build(
        spec(
            sender=Mailbox("a@example.com", long_name),
            subject="x" * 3000,
            text="t",
            headers=[("X-Long", "y" * 1990)],
            attachments=[Attachment("é" * 255 + ".txt", b"hi", "text/plain")],
        )
    )
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parse(data)
    assert msg["Subject"] == "x" * 3000 and msg["X-Long"] == "y" * 1990
    assert msg["From"].addresses[0].display_name == long_name
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "é" * 255 + ".txt"


def test_ascii_text_is_7bit_and_utf8_is_quoted_printable() -> None:
    msg = parse(build(spec(text="plain", html="<p>ünïcode</p>")))
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == "7bit"
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content().strip() == "<p>ünïcode</p>"


def test_names_subjects_and_filenames_are_encoded() -> None:
    data = build(
        spec(
            sender=Mailbox("a@example.com", "Zoë, Ltd"),
            to=[Mailbox("b@example.net", 'Bob "the" Builder')],
            subject="Grüße",
            text="t",
            attachments=[Attachment("rapport é.pdf", b"%PDF", "application/pdf")],
        )
    )
    assert data.isascii()
    msg = parse(data)
    assert msg["From"].addresses[0].display_name == "Zoë, Ltd"
    assert msg["To"].addresses[0].display_name == 'Bob "the" Builder'
    assert msg["Subject"] == "Grüße"
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "rapport é.pdf" and att.get_content() == b"%PDF"


def test_only_the_top_level_has_mime_version() -> None:
    data = build(spec(text="t", html="<p>h</p>", attachments=[Attachment("a.bin", b"\0\1")]))
    assert data.count(b"MIME-Version: 1.0") == 1


def test_smtputf8_addresses_keep_utf8_headers() -> None:
    data = build(spec(to=[Mailbox("用户@例子.example", "用户")], text="t"))
    msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert "用户@例子.example" in data.decode("utf-8")
    assert msg["To"].addresses[0].addr_spec == "用户@例子.example"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from('abXY09 _."\\,é()<>@;:\t-\u00b2\u0660'), max_size=10))
def test_a_named_mailbox_is_written_as_formataddr_writes_it(name: str) -> None:
    expected = formataddr((name, "a@example.com"), charset="utf-8") if name else "a@example.com"
    assert _mailbox(Mailbox("a@example.com", name)) == expected

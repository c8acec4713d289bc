"""Attachment content kept as the API's base64: accepted exactly when the decoder the API
used before accepts it, sized right, and cut into MIME lines that decode to the bytes."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy

from hypothesis import given
from hypothesis import strategies as st

from mailgate import mime
from mailgate.mime import Base64Text

_ALPHABET = st.text(alphabet="AZaz09+/=", max_size=24)


@given(_ALPHABET)
def test_accepts_what_strict_b64decode_accepts(text: str) -> None:
    try:
        expected: bytes | None = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        expected = None
    try:
        parsed: Base64Text | None = Base64Text.parse(text)
    except ValueError:
        parsed = None
    assert (parsed is None) == (expected is None)
    if parsed is not None:
        assert parsed.size == len(expected or b"")
        assert parsed.decoded() == expected
        assert len(parsed.text) % 4 == 0  # excess padding dropped


def test_refuses_other_characters() -> None:
    for bad in ("QUJD\n", "QU JD", "QUJD!", "Q\u00e9JD", "=QUJ"):
        try:
            Base64Text.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


@given(st.binary(max_size=2000), st.binary(max_size=300))
def test_built_message_carries_the_bytes(content: bytes, image: bytes) -> None:
    spec = mime.MessageSpec(
        sender=mime.Mailbox("app@example.com"),
        to=[mime.Mailbox("r@example.net")],
        subject="s",
        html='<img src="cid:logo">',
        text="t",
        attachments=[
            mime.Attachment(
                "a.bin", Base64Text.parse(base64.b64encode(content).decode()), "application/pdf"
            ),
            mime.Attachment(
                "logo.png", Base64Text.parse(base64.b64encode(image).decode()), "image/png", "logo"
            ),
            mime.Attachment("raw.bin", content),  # decoded bytes still work
        ],
    )
    data = mime.build(spec)
    assert all(len(line) <= 76 for line in data.split(b"\r\n") if not line.startswith(b"Content"))
    msg = email.message_from_bytes(data, policy=email.policy.default)
    got = {p.get_filename(): p.get_payload(decode=True) for p in msg.walk() if p.get_filename()}
    assert got == {"a.bin": content, "logo.png": image, "raw.bin": content}


def test_big_content_spans_chunks() -> None:
    content = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk of lines
    text = Base64Text.parse(base64.b64encode(content).decode())
    lines = b"".join(text.lines()).split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76
    assert base64.b64decode(b"".join(lines)) == content


def test_inline_images_without_html_are_still_sent() -> None:
    image = mime.Attachment("logo.png", Base64Text.parse("iVBORw0K"), "image/png", "logo")
    spec = mime.MessageSpec(
        sender=mime.Mailbox("app@example.com"),
        to=[mime.Mailbox("r@example.net")],
        subject="s",
        text="no html here",
        attachments=[image],
    )
    msg = email.message_from_bytes(mime.build(spec), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    (part,) = [p for p in msg.walk() if p.get_filename()]
    assert part["Content-ID"] == "<logo>" and part.get_payload(decode=True) == b"\x89PNG\r\n"

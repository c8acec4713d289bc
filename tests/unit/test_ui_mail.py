"""How the dashboard shows a message's parts (ui/mail.py): an enclosed message is one
part, downloadable whole, not walked into as if its parts were the message's own."""

from __future__ import annotations

from mailgate.delivery.bounce import FailedRecipient, build_dsn
from mailgate.ui.mail import part_bytes, preview_html, view

FORWARDED = (
    b"From: a@x.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nOUTER TEXT\r\n"
    b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: b@y.test\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=C\r\n\r\n"
    b"--C\r\nContent-Type: text/plain\r\n\r\nINNER TEXT\r\n"
    b"--C\r\nContent-Type: text/html\r\n\r\n<p>INNER HTML</p>\r\n--C--\r\n--B--\r\n"
)


def test_a_forwarded_message_is_one_attachment_not_the_message_s_own_body() -> None:
    shown = view(FORWARDED)
    assert shown.text == "OUTER TEXT" and shown.html is None
    assert [(a.content_type, a.filename) for a in shown.attachments] == [
        ("message/rfc822", "part-1.eml")
    ]
    assert preview_html(FORWARDED) is None  # the inner html is not the message's
    found = part_bytes(FORWARDED, 1)
    assert found is not None and b"Subject: inner" in found[1] and b"INNER HTML" in found[1]


def test_a_dsn_s_status_fields_are_a_part_with_its_content() -> None:
    dsn = build_dsn(
        original=b"From: app@example.com\r\nSubject: s\r\n\r\nbody\r\n",
        queue_id="q1",
        envelope_sender="app@example.com",
        hostname="relay.test",
        failures=[
            FailedRecipient(
                recipient="r@x.test", status="5.1.1", diagnostic="550 5.1.1 no", last_attempt=0
            )
        ],
        now=0,
    )
    shown = view(dsn)
    status = next(a for a in shown.attachments if a.content_type == "message/delivery-status")
    assert status.size > 0
    found = part_bytes(dsn, status.index)
    assert found is not None
    assert b"Final-Recipient: rfc822; r@x.test\r\n" in found[1]
    assert b"Status: 5.1.1\r\n" in found[1]


def test_a_huge_text_part_is_cut_in_the_page() -> None:
    raw = b"From: a@x.test\r\nSubject: big\r\n\r\n" + b"line of text\r\n" * 600_000
    shown = view(raw)
    assert shown.text is not None and len(shown.text) == 512 * 1024 and shown.text_truncated
    assert not view(b"From: a@x.test\r\n\r\nsmall\r\n").text_truncated

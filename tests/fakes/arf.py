"""Complaint reports (ARF, RFC 5965) in the shapes real feedback loops send them."""

from __future__ import annotations


def _original(message_id: str, to: str, return_path: str = "", body: bool = True) -> str:
    lines = []
    if return_path:
        lines.append(f"Return-Path: <{return_path}>")
    lines += [
        "Received: from relay.test (relay.test [192.0.2.10])",
        "\tby mx.receiver.example with ESMTPS id abc123; Tue, 1 Dec 2026 10:00:00 +0000",
        "From: App <app@example.com>",
        f"To: {to}",
        "Subject: Weekly deals",
        f"Message-ID: {message_id}",
        "Date: Tue, 1 Dec 2026 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    text = "\r\n".join(lines) + "\r\n"
    return text + ("\r\nBuy now!\r\n" if body else "")


def _report(
    *,
    sender: str,
    subject: str,
    fields: list[str],
    original: str,
    original_type: str = "message/rfc822",
    human: str = "This is an email abuse report for an email message received from IP "
    "192.0.2.10 on Tue, 1 Dec 2026 10:00:00 +0000.",
    boundary: str = "----=_Part_ARF_1",
) -> bytes:
    feedback = "\r\n".join(fields) + "\r\n"
    text = (
        f"From: {sender}\r\n"
        "To: fbl@example.com\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
        "Message-ID: <report-1@feedback.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{human}\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        f"{feedback}"
        "\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {original_type}\r\n"
        "Content-Disposition: inline\r\n"
        "\r\n"
        f"{original}"
        "\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode()


def yahoo_cfl(message_id: str, verp: str) -> bytes:
    """Yahoo/AOL complaint feedback loop: recipient redacted, envelope sender given."""
    return _report(
        sender="Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>",
        subject="FW: Weekly deals",
        fields=[
            "Feedback-Type: abuse",
            "User-Agent: Yahoo!-Mail-Feedback/2.0",
            "Version: 1",
            f"Original-Mail-From: <{verp}>",
            "Original-Rcpt-To: <redacted>",
            "Received-Date: Tue, 1 Dec 2026 10:00:00 +0000",
            "Source-IP: 192.0.2.10",
            "Reported-Domain: example.com",
            "Authentication-Results: mta1001.mail.gq1.yahoo.com; dkim=pass header.i=@example.com",
        ],
        original=_original(message_id, "redacted", return_path=verp),
    )


def microsoft_jmrp(message_id: str, to: str) -> bytes:
    """Microsoft JMRP-like: no Original-Mail-From, the original whole, matched by Message-ID."""
    return _report(
        sender="staff@hotmail.com",
        subject="complaint about message from 192.0.2.10",
        fields=[
            "Feedback-Type: abuse",
            "User-Agent: Microsoft Junk Mail Reporting Program",
            "Version: 0.1",
            "Source-IP: 192.0.2.10",
            "Arrival-Date: Tue, 01 Dec 2026 10:00:00 -0800",
        ],
        original=_original(message_id, to),
        human="This is an email abuse report for an email message received from IP "
        "192.0.2.10 (JMRP).",
    )


def mail_ru(message_id: str, to: str) -> bytes:
    """Mail.ru FBL: sent to the VERP return path itself."""
    return _report(
        sender="fbl@corp.mail.ru",
        subject="Abuse report",
        fields=[
            "Feedback-Type: abuse",
            "User-Agent: Mail.Ru FBL",
            "Version: 1",
            f"Original-Rcpt-To: {to}",
            "Arrival-Date: Tue, 1 Dec 2026 13:00:00 +0300",
        ],
        original=_original(message_id, to),
    )


def headers_part(message_id: str, rcpt: str) -> bytes:
    """The original as text/rfc822-headers, the recipient in Original-Rcpt-To."""
    return _report(
        sender="fbl@isp.example",
        subject="Abuse report",
        fields=[
            "Feedback-Type: abuse",
            "User-Agent: SomeGenerator/1.0",
            "Version: 1",
            "Original-Mail-From: <app@example.com>",
            f"Original-Rcpt-To: <{rcpt}>",
        ],
        original=_original(message_id, f"a@dest.test, {rcpt}", body=False),
        original_type="text/rfc822-headers",
    )


def only_headers(message_id: str, to: str) -> bytes:
    """A message/rfc822 original that is headers only, no body (as some loops trim it)."""
    return _report(
        sender="fbl@isp.example",
        subject="Report",
        fields=["Feedback-Type: fraud", "User-Agent: Trimmer/2", "Version: 1"],
        original=_original(message_id, to, body=False),
    )


def not_spam(message_id: str, to: str) -> bytes:
    return _report(
        sender="fbl@isp.example",
        subject="Report",
        fields=["Feedback-Type: not-spam", "User-Agent: X/1", "Version: 1"],
        original=_original(message_id, to),
    )


def no_feedback_type(message_id: str, to: str) -> bytes:
    return _report(
        sender="fbl@isp.example",
        subject="Report",
        fields=["User-Agent: Broken/0", "Version: 1"],
        original=_original(message_id, to),
    )


GARBAGE = (
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: message/feedback-report\r\n\r\n\xff\xfe\x00garbage: \x01\r\n"
    b"--zz\r\nContent-Type: message/rfc822\r\n\r\n\x00\x00\x00"
)

"""mailgate.delivery.bounce and .reports: DSNs out (RFC 3464), VERP, and remote bounces in."""

from __future__ import annotations

import base64
import email
import email.policy
import random
import re
import time
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime

import pytest

from mailgate.delivery.bounce import (
    FailedRecipient,
    build_dsn,
    parse_verp,
    should_send_dsn,
    verp_address,
)
from mailgate.delivery.reports import ReportedFailure, parse_dsn
from mailgate.ids import new_id

QUEUE_ID = "018cc251-f400-7abc-8def-0123456789ab"  # UUIDv7 of 2024-01-01T00:00:00Z
VERP = f"bounces+{QUEUE_ID}.0@bounce.example.com"
NOW = 1_704_103_260.0
ORIGINAL = (
    b"Received: from app.example.com ([192.0.2.1])\r\n"
    b"\tby relay.test (mailgate) with ESMTPA id " + QUEUE_ID.encode() + b";\r\n"
    b"\tMon, 01 Jan 2024 00:00:00 +0000\r\n"
    b"From: App <app@example.com>\r\n"
    b"To: nobody@example.net\r\n"
    b"Subject: Your invoice\r\n"
    b"Message-ID: <invoice-1@example.com>\r\n"
    b"\r\n"
    b"SECRET BODY: card ending 4242\r\n"
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def failure(recipient: str = "nobody@example.net", **kw: object) -> FailedRecipient:
    fields: dict[str, object] = {
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown",
        "remote_mta": "mx.example.net",
        "last_attempt": NOW - 60,
    }
    fields.update(kw)
    return FailedRecipient(recipient=recipient, **fields)  # type: ignore[arg-type]


def dsn(*failures: FailedRecipient, **kw: object) -> bytes:
    args: dict[str, object] = {
        "original": ORIGINAL,
        "queue_id": QUEUE_ID,
        "envelope_sender": "app@example.com",
        "hostname": "relay.test",
        "failures": failures or (failure(),),
        "now": NOW,
    }
    args.update(kw)
    return build_dsn(**args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def status_blocks(data: bytes) -> list[Message]:
    report = parse(data).get_payload()[1]
    assert report.get_content_type() == "message/delivery-status"
    blocks = report.get_payload()
    assert isinstance(blocks, list)
    return blocks


# ---------------------------------------------------------------------------------------
# build_dsn
# ---------------------------------------------------------------------------------------


def test_dsn_structure_parses_back_as_a_multipart_report() -> None:
    data = dsn()
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert b"report-type=delivery-status;" in data  # unquoted, as naive parsers expect
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@relay.test>"
    assert msg["To"] == "app@example.com"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert re.fullmatch(rf"<{QUEUE_ID}\.dsn\.[0-9a-f]{{16}}@relay\.test>", msg["Message-ID"])
    assert msg.defects == []
    assert all(not p.defects for p in msg.walk())


def test_dsn_message_ids_are_unique() -> None:
    assert parse(dsn())["Message-ID"] != parse(dsn())["Message-ID"]


def test_dsn_lines_are_crlf_short_and_seven_bit() -> None:
    data = dsn(failure(diagnostic="550 5.1.1 " + "word " * 800 + "x" * 3000))
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"\r\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert data.isascii()


def test_per_message_and_per_recipient_fields() -> None:
    blocks = status_blocks(dsn())
    assert len(blocks) == 2
    per_message, rcpt = blocks
    assert per_message["Reporting-MTA"] == "dns; relay.test"
    assert per_message["X-Mailgate-Queue-ID"] == QUEUE_ID
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == 1_704_067_200
    assert rcpt["Final-Recipient"] == "rfc822; nobody@example.net"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert rcpt["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"
    )
    assert parsedate_to_datetime(rcpt["Last-Attempt-Date"]).timestamp() == NOW - 60


@pytest.mark.parametrize(
    ("kwargs", "reporting", "arrival"),
    [
        ({}, "dns; relay.test", 1_704_067_200),
        ({"reporting_mta": "mx-out1.relay.test"}, "dns; mx-out1.relay.test", 1_704_067_200),
        ({"arrival_date": 1_700_000_000.5}, "dns; relay.test", 1_700_000_000),
        ({"queue_id": "not-a-uuid"}, "dns; relay.test", None),  # no time in the id: no field
        # a UUIDv4 carries no time either
        ({"queue_id": "0b3f1f7e-3c1a-4d5e-9f00-123456789abc"}, "dns; relay.test", None),
    ],
)
def test_reporting_mta_and_arrival_date(
    kwargs: dict[str, object], reporting: str, arrival: float | None
) -> None:
    per_message = status_blocks(dsn(**kwargs))[0]
    assert per_message["Reporting-MTA"] == reporting
    if arrival is None:
        assert per_message["Arrival-Date"] is None
    else:
        assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == arrival


def test_real_queue_ids_give_arrival_date_and_verp() -> None:
    qid = new_id()
    per_message = status_blocks(dsn(queue_id=qid))[0]
    arrival = parsedate_to_datetime(per_message["Arrival-Date"]).timestamp()
    assert abs(arrival - time.time()) < 5
    address = verp_address("bounces", "b.example", qid, 3)
    assert parse_verp(address, "bounces", ["b.example"]) == (qid, 3)


def test_multiple_recipients_keep_their_order_and_fields() -> None:
    failures = [
        failure("a@example.net", status="5.1.1", diagnostic="550 5.1.1 no such user a"),
        failure("b@example.org", status="5.2.1", diagnostic="550 5.2.1 disabled", remote_mta=""),
        failure("c@example.com", status="5.7.1", diagnostic="554 5.7.1 policy"),
    ]
    blocks = status_blocks(dsn(*failures))[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; a@example.net",
        "rfc822; b@example.org",
        "rfc822; c@example.com",
    ]
    assert [b["Status"] for b in blocks] == ["5.1.1", "5.2.1", "5.7.1"]
    assert blocks[1]["Remote-MTA"] is None  # unknown: omitted, not empty
    text = parse(dsn(*failures)).get_payload()[0].get_content()
    for f in failures:
        assert f"<{f.recipient}>" in text
        assert f.diagnostic in text


def test_original_headers_are_returned_and_the_body_is_not() -> None:
    data = dsn()
    assert b"SECRET BODY" not in data
    part = parse(data).get_payload()[2]
    returned = part.get_payload(decode=True)
    assert returned == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"Subject: Your invoice" in returned


@pytest.mark.parametrize(
    ("original", "returned"),
    [
        (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n"),
        (b"Subject: a\n\nbody\n", b"Subject: a\r\n"),  # bare LF
        (b"\r\nno headers at all\r\n", b""),
        (b"", b""),
        # no separator: the first line that is not a header starts the body
        (b"Subject: a\r\nthis is body text\r\nmore body\r\n", b"Subject: a\r\n"),
        (b"Subject: a\r\n folded\r\n\r\nbody", b"Subject: a\r\n folded\r\n"),
        (b" leading continuation\r\nSubject: a\r\n\r\n", b""),
    ],
)
def test_header_block_cut(original: bytes, returned: bytes) -> None:
    part = parse(dsn(original=original)).get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert (part.get_payload(decode=True) or b"") == returned


def test_eight_bit_original_headers_are_quoted_printable() -> None:
    original = "Subject: Grüße\r\nX-Long: " + "y" * 1500 + "\r\n\r\nbody"
    data = dsn(original=original.encode("utf-8"))
    assert data.isascii()
    part = parse(data).get_payload()[2]
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_payload(decode=True) == original.split("\r\n\r\n")[0].encode() + b"\r\n"


def test_non_ascii_recipient_uses_rfc6533_utf8_xtext() -> None:
    data = dsn(failure("josé@exämple.com", diagnostic="550 5.1.1 nö such üser"))
    assert data.isascii()
    msg = parse(data)
    rcpt = status_blocks(data)[1]
    assert rcpt["Final-Recipient"] == "utf-8; jos\\x{E9}@ex\\x{E4}mple.com"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 n? such ?ser"  # DSN fields are ASCII
    text = msg.get_payload()[0]
    assert text.get_content_charset() == "utf-8"
    assert "<josé@exämple.com>: mx.example.net said: 550 5.1.1 nö such üser" in (
        text.get_content().replace("\n    ", " ")
    )


def test_non_ascii_envelope_sender_needs_smtputf8() -> None:
    data = dsn(envelope_sender="用户@例子.广告")
    assert "To: 用户@例子.广告\r\n".encode() in data
    assert parse(data)["To"] == "用户@例子.广告"


def test_long_diagnostic_is_folded_and_round_trips() -> None:
    diagnostic = "550 5.1.1 " + " ".join(f"word{i}" for i in range(300))
    data = dsn(failure(diagnostic=diagnostic))
    lines = [line for line in data.split(b"\r\n") if not line.startswith(b"Message-ID:")]
    assert max(len(line) for line in lines) <= 78  # the Message-ID is one unbreakable token
    assert status_blocks(data)[1]["Diagnostic-Code"] == f"smtp; {diagnostic[:1997]}..."
    text = parse(data).get_payload()[0].get_content()
    assert all(len(line) <= 76 for line in text.splitlines())


@pytest.mark.parametrize(
    "evil",
    [
        "550 5.1.1 bad\r\nBcc: victim@example.org",
        "550 5.1.1 bad\nBcc: victim@example.org",
        "550 5.1.1 bad\rBcc: victim@example.org",
        "550 5.1.1 bad\x00\x0b\x0c\x1b[31m\u2028Bcc: victim@example.org\u202e",
        "550 5.1.1 bad\r\n\r\nInjected-Field: x",
    ],
)
def test_control_characters_never_reach_headers(evil: str) -> None:
    data = dsn(
        failure(recipient="x@example.net\r\nBcc: victim@example.org", diagnostic=evil),
        envelope_sender="app@example.com\r\nBcc: victim@example.org",
        queue_id=QUEUE_ID + "\r\nBcc: victim@example.org",
    )
    lines = data.split(b"\r\n")
    assert not any(line.startswith((b"Bcc:", b"Injected-Field:")) for line in lines)
    assert b"\x00" not in data and b"\x1b" not in data and b"\x0b" not in data
    rcpt = status_blocks(data)[1]
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1 bad")
    assert "Bcc" not in rcpt


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("failed", "5.1.1", "5.1.1"),
        ("failed", " 5.01.010 ", "5.1.10"),
        ("failed", "", "5.0.0"),
        ("failed", "550", "5.0.0"),
        ("failed", "5.1.1\r\nX: y", "5.0.0"),
        ("failed", "4.4.7", "4.4.7"),  # expired in the queue: failed, with a 4.x.x status
        ("delayed", "bogus", "4.0.0"),
    ],
)
def test_status_is_always_well_formed(action: str, status: str, expected: str) -> None:
    rcpt = status_blocks(dsn(failure(action=action, status=status)))[1]
    assert rcpt["Status"] == expected
    assert rcpt["Action"] == action


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": ()}, "at least one"),
        ({"hostname": "\r\n"}, "hostname"),
        ({"failures": (failure(action="bounced"),)}, "action"),
    ],
)
def test_build_dsn_rejects_programming_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dsn(**kwargs)


def test_failed_recipient_is_frozen_and_keyword_only() -> None:
    f = failure()
    with pytest.raises(AttributeError):
        f.status = "5.0.0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        FailedRecipient("a@b", "failed", "5.1.1", "550", "", 0.0)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# should_send_dsn
# ---------------------------------------------------------------------------------------

PLAIN = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody"


@pytest.mark.parametrize(
    ("sender", "original", "expected"),
    [
        ("app@example.com", PLAIN, True),
        ("", PLAIN, False),
        ("<>", PLAIN, False),
        ("  <>  ", PLAIN, False),
        ("MAILER-DAEMON@mail.example.org", PLAIN, False),
        ("mailer-daemon@mail.example.org", PLAIN, False),
        ("<Mailer-Daemon@mail.example.org>", PLAIN, False),
        ("MAILER-DAEMON", PLAIN, False),
        ("postmaster@example.com", PLAIN, True),  # postmaster must get DSNs (RFC 5321)
        ("mailer-daemon-fan@example.com", PLAIN, True),
        ("app@example.com", b"Auto-Submitted: no\r\n\r\n", True),
        ("app@example.com", b"Auto-Submitted: No (a person wrote this)\r\n\r\n", True),
        ("app@example.com", b"Auto-Submitted: auto-replied\r\n\r\n", False),
        ("app@example.com", b"auto-submitted: Auto-Generated\r\n\r\n", False),
        ("app@example.com", b"Auto-Submitted: auto-notified; owner-email=x@y\r\n\r\n", False),
        ("app@example.com", b"Auto-Submitted: no\r\nAuto-Submitted: auto-replied\r\n\r\n", False),
        (
            "app@example.com",
            b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
            b' boundary="x"\r\n\r\n',
            False,
        ),
        (
            "app@example.com",
            b'Content-Type: Multipart/Report; report-type="Delivery-Status"; boundary=x\r\n\r\n',
            False,
        ),
        (
            "app@example.com",
            b"Content-Type: multipart/report; report-type=global-delivery-status\r\n\r\n",
            False,
        ),
        (
            "app@example.com",
            b"Content-Type: multipart/report; report-type=disposition-notification\r\n\r\n",
            True,
        ),
        # only the header block counts: a DSN quoted in the body is not this message
        ("app@example.com", b"Subject: fwd\r\n\r\nAuto-Submitted: auto-replied\r\n", True),
        ("app@example.com", b"", True),
        ("app@example.com", b"\x00\xff garbage \r\n\r\n", True),
    ],
)
def test_should_send_dsn(sender: str, original: bytes, expected: bool) -> None:
    assert should_send_dsn(sender, original) is expected


def test_our_own_dsn_never_gets_a_dsn() -> None:
    assert should_send_dsn("app@example.com", dsn()) is False


# ---------------------------------------------------------------------------------------
# VERP
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "domain", "queue_id", "idx", "address"),
    [
        ("bounces", "bounce.example.com", QUEUE_ID, 0, VERP),
        ("bounces", "Bounce.Example.COM", QUEUE_ID.upper(), 7, VERP.replace(".0@", ".7@")),
        ("rp", "example.org", QUEUE_ID, 999_999_999, f"rp+{QUEUE_ID}.999999999@example.org"),
        ("b.x", "example.org", QUEUE_ID, 12, f"b.x+{QUEUE_ID}.12@example.org"),
    ],
)
def test_verp_round_trip(local: str, domain: str, queue_id: str, idx: int, address: str) -> None:
    assert verp_address(local, domain, queue_id, idx) == address
    assert parse_verp(address, local, [domain]) == (queue_id.lower(), idx)


@pytest.mark.parametrize(
    ("local", "domain", "queue_id", "idx"),
    [
        ("bounces", "bounce.example.com", "not-a-uuid", 0),
        ("bounces", "bounce.example.com", QUEUE_ID.replace("-", ""), 0),
        ("bounces", "bounce.example.com", QUEUE_ID + ".1", 0),
        ("bounces", "bounce.example.com", QUEUE_ID, -1),
        ("bounces", "bounce.example.com", QUEUE_ID, 1_000_000_000),
        ("bounces", "bounce.example.com", QUEUE_ID, True),
        ("bounces", "bounce.example.com", QUEUE_ID, 1.0),
        ("bou+nces", "bounce.example.com", QUEUE_ID, 0),
        ("", "bounce.example.com", QUEUE_ID, 0),
        ("bounces", "", QUEUE_ID, 0),
        ("bounces", "bad domain", QUEUE_ID, 0),
        ("bounces", "a@b", QUEUE_ID, 0),
        ("b" * 27, "example.org", QUEUE_ID, 0),  # local part over 64 octets
    ],
)
def test_verp_address_rejects_bad_input(local: str, domain: str, queue_id: str, idx: int) -> None:
    with pytest.raises(ValueError):
        verp_address(local, domain, queue_id, idx)


DOMAINS = ("bounce.example.com", "bounce.example.org")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (VERP, (QUEUE_ID, 0)),
        (f"<{VERP}>", (QUEUE_ID, 0)),
        (f"  {VERP} ", (QUEUE_ID, 0)),
        (VERP.upper(), (QUEUE_ID, 0)),  # some MTAs upper-case addresses
        (f"Bounces+{QUEUE_ID}.42@Bounce.Example.ORG", (QUEUE_ID, 42)),
        # malformed or foreign: None, never an exception
        (f"bounces+{QUEUE_ID}.0@other.example.com", None),
        (f"bounces+{QUEUE_ID}.0@bounce.example.com.", None),
        (f"bounces+{QUEUE_ID}.0@sub.bounce.example.com", None),
        (f"bounce+{QUEUE_ID}.0@bounce.example.com", None),
        (f"xbounces+{QUEUE_ID}.0@bounce.example.com", None),
        (f"bounces-{QUEUE_ID}.0@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.-1@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.01@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.1.2@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.1a@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.1234567890@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.\u0661@bounce.example.com", None),  # Arabic-Indic digit one
        (f"bounces+{QUEUE_ID[:-1]}.0@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}0.0@bounce.example.com", None),
        (f"bounces+{QUEUE_ID.replace('-', '')}.0@bounce.example.com", None),
        (f"bounces+{QUEUE_ID.replace('a', 'g')}.0@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.0\n@bounce.example.com", None),
        (f"bounces+{QUEUE_ID}.0 @bounce.example.com", None),
        (f"bounces++{QUEUE_ID}.0@bounce.example.com", None),
        (f'"bounces+{QUEUE_ID}.0"@bounce.example.com', None),
        (f"bounces+{QUEUE_ID}.0", None),
        (f"bounces+{QUEUE_ID}.0@", None),
        ("bounces@bounce.example.com", None),
        ("", None),
        ("@", None),
        (None, None),
    ],
)
def test_parse_verp(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_verp(address, "bounces", DOMAINS) == expected


def test_parse_verp_needs_a_configured_domain() -> None:
    assert parse_verp(VERP, "bounces", []) is None
    assert parse_verp(VERP, "bounces", [""]) is None
    assert parse_verp(VERP, "bounces", "bounce.example.com") == (QUEUE_ID, 0)
    assert parse_verp(f"bounces+{QUEUE_ID}.0@b", "bounces", "bounce.example.com") is None


# ---------------------------------------------------------------------------------------
# parse_dsn: samples modelled on what real MTAs send
# ---------------------------------------------------------------------------------------

POSTFIX = crlf(
    f"""Return-Path: <>
Received: by mail.example.org (Postfix)
	id 4F1B8C0E12; Mon,  1 Jan 2024 10:00:05 +0000 (UTC)
Date: Mon,  1 Jan 2024 10:00:05 +0000 (UTC)
From: MAILER-DAEMON@mail.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4F1B8C0E12.1704103205/mail.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <20240101100005.4F1B8C0E12@mail.example.org>

This is a MIME-encapsulated message.

--4F1B8C0E12.1704103205/mail.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nobody@example.net>: host mx.example.net[192.0.2.10] said: 550 5.1.1
    <nobody@example.net>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4F1B8C0E12.1704103205/mail.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org
X-Postfix-Queue-ID: 4F1B8C0E12
X-Postfix-Sender: rfc822;
    {VERP}
Arrival-Date: Mon,  1 Jan 2024 10:00:04 +0000 (UTC)

Final-Recipient: rfc822; nobody@example.net
Original-Recipient: rfc822;nobody@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address
    rejected: User unknown in virtual mailbox table

--4F1B8C0E12.1704103205/mail.example.org
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <{VERP}>
From: App <app@example.com>
To: nobody@example.net
Subject: Your invoice
Message-ID: <invoice-1@example.com>

Remote host said: 550 5.1.1 <someone-else@example.net>

--4F1B8C0E12.1704103205/mail.example.org--
"""
)

# Several recipients: an alias that failed at its target, a delayed one, a mixed-case one.
POSTFIX_MULTI = crlf(
    """From: MAILER-DAEMON@mail.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B.1/mail.example.org"

--B.1/mail.example.org
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org

Final-Recipient: rfc822; john@internal.example.net
Original-Recipient: rfc822;info@example.net
Action: failed
Status: 5.2.2
Remote-MTA: dns; store.internal.example.net
Diagnostic-Code: smtp; 552 5.2.2 <john@internal.example.net>: mailbox full

Final-Recipient: rfc822; later@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.net[192.0.2.10]:25: Connection
    timed out

Final-Recipient: rfc822; Nobody@Example.NET
Action: failed (bad destination mailbox address)
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 Nobody@Example.NET user unknown

--B.1/mail.example.org--
"""
)

POSTFIX_DELAYED = crlf(
    """From: MAILER-DAEMON@mail.example.org (Mail Delivery System)
Subject: Delayed Mail (still being retried)
Auto-Submitted: auto-replied
Content-Type: multipart/report; report-type=delivery-status;
	boundary="D.2/mail.example.org"

--D.2/mail.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

<later@example.net>: host mx.example.net[192.0.2.10] said: 451 4.7.1 Service
    unavailable - try again later (in reply to RCPT TO command)

--D.2/mail.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org
Arrival-Date: Mon,  1 Jan 2024 10:00:04 +0000 (UTC)

Final-Recipient: rfc822; later@example.net
Original-Recipient: rfc822;later@example.net
Action: delayed
Status: 4.7.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 451 4.7.1 Service unavailable - try again later
Will-Retry-Until: Mon,  6 Jan 2024 10:00:04 +0000 (UTC)

--D.2/mail.example.org--
"""
)

EXIM = crlf(
    f"""Return-path: <>
Received: from Debian-exim by mail.example.org with local (Exim 4.96)
	id 1rKBcD-0001Ab-2x
	for {VERP};
	Mon, 01 Jan 2024 10:00:05 +0000
X-Failed-Recipients: nobody@example.net
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mail.example.org>
To: {VERP}
Content-Type: multipart/report; report-type=delivery-status; boundary=1704103205-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1rKBcD-0001Ab-2x@mail.example.org>
Date: Mon, 01 Jan 2024 10:00:05 +0000

--1704103205-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody@example.net
    host mx.example.net [192.0.2.10]
    SMTP error from remote mail server after RCPT TO:<nobody@example.net>:
    550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown

--1704103205-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mail.example.org

Action: failed
Final-Recipient: rfc822;nobody@example.net
Status: 5.0.0
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown

--1704103205-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <{VERP}>
Subject: Your invoice

body
--1704103205-eximdsn-1804289383--
"""
)

GMAIL = crlf(
    f"""Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {VERP}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <invoice-1@example.com>
In-Reply-To: <invoice-1@example.com>
X-Failed-Recipients: nobody@gmail.com
Message-ID: <65929c55.050a0220.abcde.1234.GMR@mx.google.com>
Date: Mon, 01 Jan 2024 02:00:05 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000f1e2d3c4b5a69788"; report-type=delivery-status

--000000000000f1e2d3c4b5a69788
Content-Type: multipart/related; boundary="000000000000f1e9a2c4b5a69799"

--000000000000f1e9a2c4b5a69799
Content-Type: multipart/alternative; boundary="000000000000f1e9a3c4b5a697aa"

--000000000000f1e9a3c4b5a697aa
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to nobody@gmail.com because the address couldn't be
found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

--000000000000f1e9a3c4b5a697aa
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2></body></html>

--000000000000f1e9a3c4b5a697aa--
--000000000000f1e9a2c4b5a69799
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==
--000000000000f1e9a2c4b5a69799--
--000000000000f1e2d3c4b5a69788
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; app@example.com
Arrival-Date: Mon, 01 Jan 2024 02:00:04 -0800 (PST)
X-Original-Message-ID: <invoice-1@example.com>

Final-Recipient: rfc822; nobody@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2a00:1450:400c:c0b::1a, the server for
 the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
 Please try
 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. For more information, go to
 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser
 a1-20020a5d4d41000000b0033a8si1234567wrb.123 - gsmtp
Last-Attempt-Date: Mon, 01 Jan 2024 02:00:05 -0800 (PST)

--000000000000f1e2d3c4b5a69788
Content-Type: message/rfc822

Return-Path: <{VERP}>
Subject: Your invoice

body
--000000000000f1e2d3c4b5a69788--
"""
)

MICROSOFT = crlf(
    f"""From: Microsoft Outlook <postmaster@contoso.onmicrosoft.com>
To: <{VERP}>
Date: Mon, 1 Jan 2024 10:00:05 +0000
Content-Type: multipart/report; report-type=delivery-status;
	boundary="_000_b1a2c3d4e5f6_"
MIME-Version: 1.0
Message-ID: <b1a2c3d4-e5f6-4711-8a9b-0c1d2e3f4a5b@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: <invoice-1@example.com>
Subject: Undeliverable: Your invoice
Auto-Submitted: auto-replied
X-MS-Exchange-Message-Is-Ndr:

--_000_b1a2c3d4e5f6_
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="_001_b1a2c3d4e5f6_"

--_001_b1a2c3d4e5f6_
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to Nobody@Contoso.COM couldn't be delivered.=0D
Nobody wasn't found at contoso.com.=0D

--_001_b1a2c3d4e5f6_
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body>Your message couldn't be delivered.</body></html>

--_001_b1a2c3d4e5f6_--

--_000_b1a2c3d4e5f6_
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;mail.example.org
Arrival-Date: Mon, 1 Jan 2024 10:00:04 +0000

Original-Recipient: rfc822;Nobody@Contoso.COM
Final-Recipient: rfc822;Nobody@Contoso.COM
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not
 found by SMTP address lookup
X-Display-Name: Nobody


--_000_b1a2c3d4e5f6_
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
Subject: Your invoice

--_000_b1a2c3d4e5f6_--
"""
)

# RFC 6533: UTF-8 addresses in message/global-delivery-status.
GLOBAL = crlf(
    """From: Mail Delivery System <MAILER-DAEMON@mail.example.org>
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=global-delivery-status; boundary="g"

--g
Content-Type: text/plain; charset=utf-8

<josé@exämple.com>: user unknown

--g
Content-Type: message/global-delivery-status

Reporting-MTA: dns; mail.example.org

Final-Recipient: utf-8; josé@EXÄMPLE.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 unknown user

Final-Recipient: utf-8; ren\\x{E9}@example.com
Action: failed
Status: 5.1.1

--g--
"""
)

# A delivery-status part in base64, and no blank line between the recipients.
_STATUS_B64 = base64.encodebytes(
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; a@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Final-Recipient: rfc822; b@example.net\r\nAction: delayed\r\nStatus: 4.2.2\r\n"
    b"Final-Recipient: rfc822; c@example.net\r\nAction: failed\r\nStatus: 5.2.1\r\n"
).decode()
ODD_ENCODING = crlf(
    f"""From: postmaster@example.net
Subject: Returned mail
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: message/delivery-status
Content-Transfer-Encoding: base64

{_STATUS_B64}
--b--
"""
)

# A bounce of a bounce: only the outer report counts, not the returned one inside.
NESTED = crlf(
    """From: MAILER-DAEMON@outer.example.org
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="outer"

--outer
Content-Type: message/delivery-status

Reporting-MTA: dns; outer.example.org

Final-Recipient: rfc822; outer@example.net
Action: failed
Status: 5.1.1

--outer
Content-Type: message/rfc822

From: MAILER-DAEMON@inner.example.org
Content-Type: multipart/report; report-type=delivery-status; boundary="inner"

--inner
Content-Type: message/delivery-status

Reporting-MTA: dns; inner.example.org

Final-Recipient: rfc822; inner@example.net
Action: failed
Status: 5.1.1

--inner--

--outer--
"""
)

QMAIL = crlf(
    f"""Return-Path: <>
Date: 1 Jan 2024 10:00:05 -0000
From: MAILER-DAEMON@mail.example.org
To: {VERP}
Subject: failure notice

Hi. This is the qmail-send program at mail.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.net>:
192.0.2.10 does not like recipient.
Remote host said: 550 5.1.1 <nobody@example.net>... User unknown
Giving up on 192.0.2.10.

--- Below this line is a copy of the message.

Return-Path: <{VERP}>
To: someone-else@example.net
Subject: Your invoice

Remote host said: 550 5.1.1 <someone-else@example.net>
"""
)

YAHOO = crlf(
    """From: MAILER-DAEMON@yahoo.com
Subject: Failure Notice

Sorry, we were unable to deliver your message to the following address.

<nobody@yahoo.com>:
554: delivery error: dd This user doesn't have a yahoo.com account (nobody@yahoo.com) [0]

--- Below this line is a copy of the message.

To: another@yahoo.com
"""
)

NO_ADDRESS = crlf(
    """From: Mail Delivery System <postmaster@mail.example.org>
Subject: Undeliverable message

The remote server answered: 550 5.7.1 Message rejected as spam.
"""
)

AUTO_REPLY = crlf(
    """From: Someone <someone@example.net>
Subject: Out of office
Auto-Submitted: auto-replied

I am away. Release 5.1.1 ships on Monday; ask other@example.net.
"""
)

# Auto-replies that repeat the original's subject, which names a bounce: not bounces.
ECHOED_SUBJECT = crlf(
    """From: Ann <ann@sink.test>
Subject: Out of office: Your bounce rate report
Auto-Submitted: auto-replied

Our portal is now at version 5.1.1, see the site.
"""
)

ECHOED_SUBJECT_NO_HEADER = crlf(
    """From: Bob <bob@example.net>
Subject: Automatic reply: Your parcel delivery notification

Back on Monday.
500 Oracle Parkway
"""
)

ARF = crlf(
    """From: feedback@isp.example
Subject: Abuse report
Content-Type: multipart/report; report-type=feedback-report; boundary="f"

--f
Content-Type: text/plain

550 5.7.1 complaint about nobody@example.net

--f
Content-Type: message/feedback-report

Feedback-Type: abuse

--f--
"""
)


def rf(recipient: str, status: str, diagnostic: str, remote: str = "") -> ReportedFailure:
    return ReportedFailure(recipient, "failed", status, diagnostic, remote)


USER_UNKNOWN = "Recipient address rejected: User unknown"
SAMPLES: list[tuple[str, bytes, list[ReportedFailure]]] = [
    (
        "postfix",
        POSTFIX,
        [
            rf(
                "nobody@example.net",
                "5.1.1",
                f"550 5.1.1 <nobody@example.net>: {USER_UNKNOWN} in virtual mailbox table",
                "mx.example.net",
            )
        ],
    ),
    (
        "postfix-multi",
        POSTFIX_MULTI,
        [
            rf(
                "info@example.net",  # Original-Recipient: the address we sent to
                "5.2.2",
                "552 5.2.2 <john@internal.example.net>: mailbox full",
                "store.internal.example.net",
            ),
            rf("Nobody@example.net", "5.1.1", "550 5.1.1 Nobody@Example.NET user unknown"),
        ],
    ),
    ("postfix-delayed", POSTFIX_DELAYED, []),
    (
        "exim",  # Status 5.0.0 refined from the diagnostic
        EXIM,
        [
            rf(
                "nobody@example.net",
                "5.1.1",
                f"550 5.1.1 <nobody@example.net>: {USER_UNKNOWN}",
                "mx.example.net",
            )
        ],
    ),
    (
        "gmail",
        GMAIL,
        [
            rf(
                "nobody@gmail.com",
                "5.1.1",
                "550-5.1.1 The email account that you tried to reach does not exist. Please "
                "try 550-5.1.1 double-checking the recipient's email address for typos or "
                "550-5.1.1 unnecessary spaces. For more information, go to 550 5.1.1 "
                "https://support.google.com/mail/?p=NoSuchUser "
                "a1-20020a5d4d41000000b0033a8si1234567wrb.123 - gsmtp",
                "gmail-smtp-in.l.google.com",
            )
        ],
    ),
    (
        "microsoft",
        MICROSOFT,
        [
            rf(
                "Nobody@contoso.com",
                "5.1.10",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
                "address lookup",
            )
        ],
    ),
    (
        "global",
        GLOBAL,
        [
            rf("josé@exämple.com", "5.1.1", "550 5.1.1 unknown user"),
            rf("rené@example.com", "5.1.1", ""),
        ],
    ),
    (
        "base64-no-blank-lines",
        ODD_ENCODING,
        [rf("a@example.net", "5.1.1", ""), rf("c@example.net", "5.2.1", "")],
    ),
    ("nested", NESTED, [rf("outer@example.net", "5.1.1", "")]),
    (
        "qmail",
        QMAIL,
        [rf("nobody@example.net", "5.1.1", "550 5.1.1 <nobody@example.net>... User unknown")],
    ),
    (
        "yahoo",
        YAHOO,
        [
            rf(
                "nobody@yahoo.com",
                "5.0.0",
                "554: delivery error: dd This user doesn't have a yahoo.com account "
                "(nobody@yahoo.com) [0]",
            )
        ],
    ),
    ("no-address", NO_ADDRESS, [rf("", "5.7.1", "550 5.7.1 Message rejected as spam.")]),
    ("auto-reply", AUTO_REPLY, []),
    ("auto-reply-with-a-bounce-subject", ECHOED_SUBJECT, []),
    ("auto-reply-by-its-subject", ECHOED_SUBJECT_NO_HEADER, []),
    ("feedback-report", ARF, []),
    ("empty", b"", []),
]


@pytest.mark.parametrize(
    ("data", "expected"), [s[1:] for s in SAMPLES], ids=[s[0] for s in SAMPLES]
)
def test_parse_dsn_samples(data: bytes, expected: list[ReportedFailure]) -> None:
    assert parse_dsn(data) == expected


def report(*recipient_blocks: str) -> bytes:
    """A minimal multipart/report around the given per-recipient field blocks."""
    status = "Reporting-MTA: dns; mx.example.net\n\n" + "\n\n".join(recipient_blocks)
    return crlf(
        "From: MAILER-DAEMON@mx.example.net\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
        f"--r\nContent-Type: message/delivery-status\n\n{status}\n\n--r--\n"
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 5.1.1", ("a@x.net", "5.1.1")),
        # field names and values are case-insensitive, comments are allowed
        (
            "final-recipient: RFC822; <A@X.NET>\nACTION: Failed (bad address)\n"
            "status: 5.1.1 (user unknown)",
            ("A@x.net", "5.1.1"),
        ),
        ("Final-Recipient: a@x.net\nAction: failed\nStatus: 5.1.1", ("a@x.net", "5.1.1")),
        # no Action, but a permanent status: a failure
        ("Final-Recipient: rfc822; a@x.net\nStatus: 5.2.1", ("a@x.net", "5.2.1")),
        ("Final-Recipient: rfc822; a@x.net\nStatus: 4.2.1", None),
        # Original-Recipient without an address: Final-Recipient it is
        (
            "Original-Recipient: rfc822; unknown\nFinal-Recipient: rfc822; a@x.net\n"
            "Action: failed\nStatus: 5.1.1",
            ("a@x.net", "5.1.1"),
        ),
        # generic status: refined from the diagnostic, but never from an IP address
        (
            "Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: X-Postfix; 550-5.7.1 rejected",
            ("a@x.net", "5.7.1"),
        ),
        (
            "Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; host 10.5.1.1 said: 550 denied",
            ("a@x.net", "5.0.0"),
        ),
        (
            "Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; 550 4.2.2 mailbox full",
            ("a@x.net", "5.0.0"),
        ),
        ("Final-Recipient: rfc822; a@x.net\nAction: failed", ("a@x.net", "5.0.0")),
        ("Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 4.4.7", ("a@x.net", "4.4.7")),
        ("Final-Recipient: rfc822; a@x.net\nAction: delayed\nStatus: 4.4.1", None),
        ("Final-Recipient: rfc822; a@x.net\nAction: delivered\nStatus: 2.0.0", None),
        ("Final-Recipient: rfc822; a@x.net\nAction: relayed\nStatus: 2.0.0", None),
        ("Final-Recipient: rfc822; a@x.net\nAction: expanded\nStatus: 2.0.0", None),
        # an address we cannot read: still a failure, the VERP address names the recipient
        ("Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1", ("", "5.1.1")),
    ],
)
def test_parse_dsn_fields(block: str, expected: tuple[str, str] | None) -> None:
    result = [(f.recipient, f.status) for f in parse_dsn(report(block))]
    assert result == ([expected] if expected else [])


def test_parse_dsn_deduplicates_recipients() -> None:
    block = "Final-Recipient: rfc822; a@x.net\nAction: failed\nStatus: 5.1.1"
    assert len(parse_dsn(report(block, block.replace("a@x.net", "a@X.NET")))) == 1


@pytest.mark.parametrize("name", ["postfix", "exim", "gmail", "qmail"])
def test_parse_dsn_accepts_bare_lf(name: str) -> None:
    data, expected = next((d, e) for n, d, e in SAMPLES if n == name)
    assert parse_dsn(data.replace(b"\r\n", b"\n")) == expected


def test_parse_dsn_round_trips_build_dsn() -> None:
    failures = [
        failure("nobody@example.net"),
        failure("Mixed@Example.ORG", status="5.2.1", diagnostic="550 5.2.1 disabled"),
        failure("josé@exämple.com", diagnostic="550 5.1.1 user unknown", remote_mta=""),
        failure(
            "long@example.net",
            diagnostic="550 5.1.1 " + " ".join(f"word{i}" for i in range(150)),
        ),
    ]
    assert parse_dsn(dsn(*failures)) == [
        rf(
            "nobody@example.net",
            "5.1.1",
            f"550 5.1.1 <nobody@example.net>: {USER_UNKNOWN}",
            "mx.example.net",
        ),
        rf("Mixed@example.org", "5.2.1", "550 5.2.1 disabled", "mx.example.net"),
        rf("josé@exämple.com", "5.1.1", "550 5.1.1 user unknown"),
        rf("long@example.net", "5.1.1", failures[3].diagnostic, "mx.example.net"),
    ]


def test_parse_dsn_reports_expiry_as_failed_with_its_status() -> None:
    data = dsn(failure(status="4.4.7", diagnostic="", remote_mta=""))
    assert parse_dsn(data) == [rf("nobody@example.net", "4.4.7", "")]


# ---------------------------------------------------------------------------------------
# parse_dsn never raises
# ---------------------------------------------------------------------------------------

_TOKENS = [
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Type: message/global-delivery-status\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"From: MAILER-DAEMON@x\r\n",
    b"--x\r\n",
    b"--x--\r\n",
    b"Final-Recipient: rfc822; a@b.c\r\n",
    b"Final-Recipient: utf-8; \\x{110000}@\\x{D800}.c\r\n",
    b"Original-Recipient: ;\r\n",
    b"Action: failed\r\n",
    b"Status: 5.1.1\r\n",
    b"Diagnostic-Code: smtp; 550 5.1.1 x\r\n",
    b" folded\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"=?utf-8?b?w6k=?=",
    b"550 5.1.1 <a@b.c>",
    b"\xff\xfe\x00",
    b"=\r\n",
    b"=ZZ",
]


def _fuzz_inputs() -> list[bytes]:
    rng = random.Random(20240101)
    inputs = [rng.randbytes(rng.randrange(0, 600)) for _ in range(150)]
    inputs += [b"".join(rng.choices(_TOKENS, k=rng.randrange(1, 60))) for _ in range(250)]
    for _, sample, _ in SAMPLES:
        step = max(1, len(sample) // 40)
        inputs += [sample[:n] for n in range(0, len(sample), step)]
        for _ in range(8):
            mutated = bytearray(sample)
            for _ in range(rng.randrange(1, 20)):
                pos = rng.randrange(len(mutated) + 1)
                mutated[pos:pos] = rng.choice(_TOKENS)
            inputs.append(bytes(mutated))
    built = dsn(failure("josé@exämple.com"), failure())
    inputs += [built[:n] for n in range(0, len(built), max(1, len(built) // 60))]
    return inputs


def test_parse_dsn_never_raises_on_garbage() -> None:
    for data in _fuzz_inputs():
        result = parse_dsn(data)
        assert isinstance(result, list)
        for f in result:
            assert isinstance(f, ReportedFailure)
            assert f.action == "failed"
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", f.status)
            assert "\n" not in f.diagnostic and "\r" not in f.diagnostic


@pytest.mark.parametrize("data", [None, "a string", 42])
def test_parse_dsn_wrong_types(data: object) -> None:
    assert parse_dsn(data) == []  # type: ignore[arg-type]


def test_should_send_dsn_never_raises_on_garbage() -> None:
    for data in _fuzz_inputs()[:300]:
        assert should_send_dsn("app@example.com", data) in (True, False)


def test_parse_dsn_reads_a_huge_line_in_linear_time() -> None:
    """Base64 or quoted-printable decode to lines far past 998 octets: an 82 KB report of
    one 60,000-character line took 5.8 s of the relay's event loop (the address pattern
    backtracked over the line from each position), a 1 MB one would have taken minutes."""
    text = "550 " + "a" * 1_000_000 + "@" + "b" * 100_000
    body = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
    data = (
        "From: someone@isp.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + body
    ).encode()
    started = time.perf_counter()
    (failure,) = parse_dsn(data)
    assert time.perf_counter() - started < 2.0  # the quadratic scan: hours
    assert failure.recipient == "" and failure.diagnostic.startswith("550 aaaa")

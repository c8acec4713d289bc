"""mailgate.delivery.complaints.parse_arf: complaint reports (RFC 5965) as feedback loops send
them, and input that is none."""

from __future__ import annotations

import random

import pytest

from fakes import arf
from mailgate.delivery.complaints import is_feedback_report, parse_arf
from mailgate.delivery.reports import parse_dsn

MID = "<0192abcd.1@example.com>"
VERP = "bounces+018cc251-f400-7abc-8def-0123456789ab.1@bounces.example.com"


def test_yahoo_cfl() -> None:
    c = parse_arf(arf.yahoo_cfl(MID, VERP))
    assert c is not None
    assert (c.feedback_type, c.user_agent) == ("abuse", "Yahoo!-Mail-Feedback/2.0")
    assert c.original_mail_from == VERP and c.return_path == VERP
    assert c.original_rcpt_to == "" and c.original_to == ""  # redacted
    assert c.message_id == MID and c.source_ip == "192.0.2.10"


def test_microsoft_jmrp_without_original_mail_from() -> None:
    c = parse_arf(arf.microsoft_jmrp(MID, "Someone <Someone@Hotmail.COM>"))
    assert c is not None and c.original_mail_from == ""
    assert c.message_id == MID and c.original_to == "Someone@hotmail.com"


def test_mail_ru() -> None:
    c = parse_arf(arf.mail_ru(MID, "user@mail.ru"))
    assert c is not None and c.original_rcpt_to == "user@mail.ru" and c.message_id == MID


def test_headers_only_original_part() -> None:
    c = parse_arf(arf.headers_part(MID, "b@dest.test"))
    assert c is not None
    assert c.message_id == MID and c.original_rcpt_to == "b@dest.test"
    assert c.original_to == ""  # two addresses in To: names no single recipient


def test_original_without_body_and_fraud_type() -> None:
    c = parse_arf(arf.only_headers(MID, "x@dest.test"))
    assert c is not None and c.feedback_type == "fraud" and c.original_to == "x@dest.test"


def test_report_without_feedback_type_is_none() -> None:
    assert is_feedback_report(arf.no_feedback_type(MID, "x@dest.test"))
    assert parse_arf(arf.no_feedback_type(MID, "x@dest.test")) is None


def test_an_arf_report_is_not_a_bounce() -> None:
    assert parse_dsn(arf.yahoo_cfl(MID, VERP)) == []


@pytest.mark.parametrize(
    "data",
    [arf.GARBAGE, b"", b"hello", b"\x00\xff" * 100, b"Content-Type: multipart/report\r\n\r\n"],
)
def test_garbage_is_none(data: bytes) -> None:
    assert parse_arf(data) is None


def test_never_raises_on_mutations() -> None:
    rng = random.Random(5965)
    base = bytearray(arf.yahoo_cfl(MID, VERP))
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randrange(len(data))
        parse_arf(bytes(data[:cut]))  # may be None or a Complaint, never an exception
        is_feedback_report(bytes(data))


def test_wrong_types() -> None:
    assert parse_arf(None) is None  # type: ignore[arg-type]
    assert is_feedback_report(42) is False  # type: ignore[arg-type]

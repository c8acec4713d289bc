"""The upstream's message id in real 250 replies to DATA."""

from __future__ import annotations

import pytest

from mailgate.delivery.classify import parse_reply
from mailgate.delivery.upstream_id import upstream_message_id

CASES = [
    # Postfix
    ("250 2.0.0 Ok: queued as 4XbBq32Mz7z9vQ1", "4XbBq32Mz7z9vQ1"),
    ("250 2.0.0 Ok: queued as 3F2A81C0E5", "3F2A81C0E5"),
    # Exim
    ("250 OK id=1tQ2aB-0003xY-4Z", "1tQ2aB-0003xY-4Z"),
    # Amazon SES
    (
        "250 Ok 0102018f2b7c3d4e-6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-000000",
        "0102018f2b7c3d4e-6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-000000",
    ),
    # SendGrid
    ("250 Ok: queued as aBcDeF12GhIjKl3MnOpQr", "aBcDeF12GhIjKl3MnOpQr"),
    # Brevo: the id in angle brackets after "queued as"
    (
        "250 2.0.0 OK: queued as <202401011200.12345678901@smtp-relay.mailin.fr>",
        "202401011200.12345678901@smtp-relay.mailin.fr",
    ),
    # Mailgun says nothing we can use
    ("250 Great success", ""),
    # Gmail: the token before "gsmtp" (after the timestamp)
    (
        "250 2.0.0 OK  1700000000 a1-20020a170902c10100b001c9b8d8e9e6si1234567plf.123 - gsmtp",
        "a1-20020a170902c10100b001c9b8d8e9e6si1234567plf.123",
    ),
    (
        "250 2.0.0 OK 1700000000 d9443c01a7336-1e2b3c4d5e6f7si12345 gsmtp",
        "d9443c01a7336-1e2b3c4d5e6f7si12345",
    ),
    # Microsoft 365 / Exchange: the Message-ID in <>, not the per-server InternalId
    (
        "250 2.6.0 <DM6PR11MB4321ABCD1234@DM6PR11MB4321.namprd11.prod.outlook.com> "
        "[InternalId=25769803782, Hostname=DM6PR11MB4321.namprd11.prod.outlook.com] "
        "10424 bytes in 0.052, 195.393 KB/sec Queued mail for delivery",
        "DM6PR11MB4321ABCD1234@DM6PR11MB4321.namprd11.prod.outlook.com",
    ),
    # A bare id
    ("250 2.0.0 8f3a1c2e-5b6d-4e7f-9a0b-1c2d3e4f5a6b", "8f3a1c2e-5b6d-4e7f-9a0b-1c2d3e4f5a6b"),
    # SparkPost
    ("250 2.0.0 OK A1/B2-12345-65B1C2D3", "A1/B2-12345-65B1C2D3"),
    # mailgate's maildir provider
    (
        "250 2.0.0 saved as 1700000000.M123456P42Q7.relay-host",
        "1700000000.M123456P42Q7.relay-host",
    ),
    # No id
    ("250 OK", ""),
    ("250 2.0.0 Ok", ""),
    ("250 2.0.0 OK queued upstream", ""),
    ("250 Message accepted for delivery", ""),
    ("", ""),
    # Not an id: too long, or not printable
    ("250 2.0.0 Ok: queued as " + "A1" * 101, ""),
    ("250 2.0.0 Ok: queued as ab\u00e9c1", ""),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_upstream_message_id(line: str, expected: str) -> None:
    assert upstream_message_id(line) == expected


@pytest.mark.parametrize(("line", "expected"), [c for c in CASES if c[0]])
def test_the_same_from_the_parsed_reply_text(line: str, expected: str) -> None:
    """The delivery records it from SmtpReply.text, which has lost the codes."""
    code, _, rest = line.partition(" ")
    assert upstream_message_id(parse_reply(int(code), rest).text) == expected


def test_an_id_of_200_characters_is_kept() -> None:
    token = "A1" * 100
    assert upstream_message_id(f"250 2.0.0 Ok: queued as {token}") == token

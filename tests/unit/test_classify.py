"""mailgate.delivery.classify: what an upstream reply means (sent, temporary, permanent)."""

from __future__ import annotations

import pytest

from mailgate.delivery.classify import PROVIDER_STAGES, classify, connection_reply, parse_reply
from mailgate.models import Outcome, SmtpReply

SENT, TEMPORARY, PERMANENT = Outcome.SENT, Outcome.TEMPORARY, Outcome.PERMANENT

# aiosmtplib hands over a multi-line reply as the lines after "550-"/"550 ", joined by "\n".
GMAIL_NO_SUCH_USER = (
    "5.1.1 The email account that you tried to reach does not exist. Please try\n"
    "5.1.1 double-checking the recipient's email address for typos or\n"
    "5.1.1 unnecessary spaces. For more information, go to\n"
    "5.1.1  https://support.google.com/mail/?p=NoSuchUser "
    "41be03b00d2f7-b0f7ab0e1e5si1234567a12.123 - gsmtp"
)


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "rest"),
    [
        (
            550,
            "5.5.0 Requested action not taken: mailbox unavailable",
            "5.5.0",
            "Requested action not taken: mailbox unavailable",
        ),
        (452, "4.2.2 mailbox full", "4.2.2", "mailbox full"),
        (
            421,
            "4.7.0 Try again later, closing connection.",
            "4.7.0",
            "Try again later, closing connection.",
        ),
        (
            250,
            "2.0.0 OK  1700000000 d2e1a72fcca58-6c3f1a2b3c4d5sm123456pfb.12 - gsmtp",
            "2.0.0",
            "OK 1700000000 d2e1a72fcca58-6c3f1a2b3c4d5sm123456pfb.12 - gsmtp",
        ),
        (
            535,
            "5.7.8 Username and Password not accepted.",
            "5.7.8",
            "Username and Password not accepted.",
        ),
        (550, "  5.1.1   spaced \t out  ", "5.1.1", "spaced out"),
        (550, "5.1.1", "5.1.1", ""),
        (550, "5.7.26 Unauthenticated email", "5.7.26", "Unauthenticated email"),
        (550, "5.123.456 odd but valid", "5.123.456", "odd but valid"),
        # no enhanced code: a default one from the basic code's class
        (250, "OK", "2.0.0", "OK"),
        (
            451,
            "Requested action aborted: local error",
            "4.0.0",
            "Requested action aborted: local error",
        ),
        (554, "Transaction failed", "5.0.0", "Transaction failed"),
        (421, "", "4.0.0", ""),
        (
            354,
            "Start mail input; end with <CRLF>.<CRLF>",
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ),
        # things that look like an enhanced code but are not one
        (550, "5.1.1bad mailbox", "5.0.0", "5.1.1bad mailbox"),
        (550, "5.1234.1 too many digits", "5.0.0", "5.1234.1 too many digits"),
        (550, "3.1.1 wrong class", "5.0.0", "3.1.1 wrong class"),
        (550, "Mailbox 5.1.1 later in the text", "5.0.0", "Mailbox 5.1.1 later in the text"),
    ],
)
def test_parse_reply(code: int, text: str, enhanced: str, rest: str) -> None:
    assert parse_reply(code, text) == SmtpReply(code, enhanced, rest)


def test_parse_reply_joins_multiline_gmail_reply() -> None:
    reply = parse_reply(550, GMAIL_NO_SUCH_USER)
    assert reply.code == 550
    assert reply.enhanced == "5.1.1"
    assert reply.text.startswith(
        "The email account that you tried to reach does not exist. Please try "
    )
    assert "\n" not in reply.text
    assert reply.text.endswith("- gsmtp")


def test_parse_reply_ignores_enhanced_code_of_other_class() -> None:
    # The class of the enhanced code must match the basic code (RFC 2034).
    assert parse_reply(250, "5.1.1 odd") == SmtpReply(250, "2.0.0", "5.1.1 odd")


# (stage, code, text, expected outcome): realistic replies from real providers.
REPLIES = [
    # Gmail / Outlook / generic: recipient does not exist -> permanent
    ("rcpt", 550, GMAIL_NO_SUCH_USER, PERMANENT),
    ("rcpt", 550, "5.5.0 Requested action not taken: mailbox unavailable", PERMANENT),
    (
        "rcpt",
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        PERMANENT,
    ),
    (
        "rcpt",
        550,
        "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        PERMANENT,
    ),
    ("mail", 553, "5.7.1 Sender address rejected: not owned by user", PERMANENT),
    (
        "mail",
        550,
        "5.7.26 This mail has been blocked because the sender is unauthenticated.",
        PERMANENT,
    ),
    ("data", 554, "5.7.1 Message rejected", PERMANENT),
    ("data", 552, "5.3.4 Message size exceeds fixed maximum message size", PERMANENT),
    ("data", 554, "5.7.9 Message not accepted for policy reasons.", PERMANENT),
    # 4xx: always temporary
    ("rcpt", 452, "4.2.2 mailbox full", TEMPORARY),
    (
        "rcpt",
        450,
        "4.2.1 The user you are trying to contact is receiving mail too quickly.",
        TEMPORARY,
    ),
    ("data", 451, "4.3.0 Mail server temporarily rejected message.", TEMPORARY),
    ("mail", 421, "4.7.0 Try again later, closing connection.", TEMPORARY),
    (
        "data",
        421,
        "4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume",
        TEMPORARY,
    ),
    ("rcpt", 450, "4.7.1 <x@example.com>: Recipient address rejected: Greylisted", TEMPORARY),
    # 5xx that says "later" is not a hard failure
    ("rcpt", 550, "5.7.1 Too many messages, rate limited, try again later", TEMPORARY),
    ("data", 550, "5.7.1 Daily sending quota exceeded; you are being rate-limited", TEMPORARY),
    ("rcpt", 554, "5.7.1 Service temporarily unavailable", TEMPORARY),
    ("mail", 554, "5.7.0 Too many connections from your IP", TEMPORARY),
    ("mail", 554, "5.7.0 Sending throttled for this account", TEMPORARY),
    ("rcpt", 550, "5.7.1 Graylisted, see https://example.net/graylisting", TEMPORARY),
    ("rcpt", 551, "5.7.1 Please try later", TEMPORARY),
    ("data", 552, "5.2.0 Requested mail action aborted: please retry", TEMPORARY),
    ("rcpt", 550, "5.7.1 Greylisting in action, TRY AGAIN LATER", TEMPORARY),
    ("rcpt", 550, "5.7.1 Too many requests from this sender", TEMPORARY),
    ("data", 552, "5.3.4 Insufficient system resources available", TEMPORARY),
    # 5xx at a provider stage is the provider's problem, not the recipient's
    ("auth", 535, "5.7.8 Username and Password not accepted.", TEMPORARY),
    ("auth", 535, "5.7.3 Authentication unsuccessful", TEMPORARY),
    ("connect", 554, "5.7.1 Client host rejected: access denied", TEMPORARY),
    ("ehlo", 501, "5.5.4 Invalid EHLO hostname", TEMPORARY),
    ("starttls", 554, "5.7.0 TLS not available", TEMPORARY),
    ("connect", 521, "5.3.2 Machine does not accept mail", TEMPORARY),
    # success
    ("data", 250, "2.0.0 OK  1700000000 d2e1a72fcca58-6c3f1a2b3c4d5sm123456pfb.12 - gsmtp", SENT),
    ("data", 250, "2.6.0 <abc@example.com> [InternalId=123] Queued mail for delivery", SENT),
    ("data", 250, "Ok: queued as 4Xyz1234", SENT),
    ("data", 251, "2.1.5 User not local; will forward", SENT),
    # 2xx anywhere but data is not (yet) a delivery
    ("rcpt", 250, "2.1.5 Recipient OK", TEMPORARY),
    ("mail", 250, "2.1.0 Sender OK", TEMPORARY),
    ("connect", 220, "smtp.gmail.com ESMTP ready", TEMPORARY),
]


@pytest.mark.parametrize(("stage", "code", "text", "expected"), REPLIES)
def test_classify_real_replies(stage: str, code: int, text: str, expected: Outcome) -> None:
    assert classify(stage, parse_reply(code, text)) is expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (SmtpReply(550, "4.2.2", "mailbox full"), TEMPORARY),
        (SmtpReply(554, "4.4.7", "Message expired"), TEMPORARY),
        (SmtpReply(550, "5.2.2", "mailbox full"), PERMANENT),
        (SmtpReply(550, "", "no enhanced code"), PERMANENT),
    ],
)
def test_classify_5xx_with_enhanced_4xx_is_temporary(reply: SmtpReply, expected: Outcome) -> None:
    for stage in ("mail", "rcpt", "data"):
        assert classify(stage, reply) is expected


def test_parsed_5xx_with_enhanced_4xx_is_temporary() -> None:
    # BUG (src/mailgate/delivery/classify.py, parse_reply line 30): parse_reply drops an
    # enhanced code whose class differs from the basic code (550 + "4.2.2" -> enhanced
    # "5.0.0"), so classify()'s `reply.enhanced.startswith("4.")` branch can never fire for
    # a real upstream reply (transports/smtp.py always goes through parse_reply): the
    # message below is bounced (PERMANENT) instead of retried (TEMPORARY).
    reply = parse_reply(550, "4.2.2 Mailbox full")
    for stage in ("mail", "rcpt", "data"):
        assert classify(stage, reply) is TEMPORARY, stage


@pytest.mark.parametrize("stage", sorted(PROVIDER_STAGES))
@pytest.mark.parametrize("code", [500, 502, 530, 535, 550, 554])
def test_5xx_at_provider_stage_is_temporary(stage: str, code: int) -> None:
    assert classify(stage, SmtpReply(code, "5.0.0", "No")) is TEMPORARY


@pytest.mark.parametrize("stage", ["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data"])
@pytest.mark.parametrize("code", [421, 450, 451, 452, 454])
def test_4xx_is_always_temporary(stage: str, code: int) -> None:
    assert classify(stage, SmtpReply(code, "4.0.0", "Not now")) is TEMPORARY


def test_provider_stages() -> None:
    assert frozenset({"connect", "ehlo", "starttls", "auth"}) == PROVIDER_STAGES


@pytest.mark.parametrize(
    ("kind", "enhanced"),
    [
        ("refused", "4.4.1"),
        ("timeout", "4.4.2"),
        ("dropped", "4.4.2"),
        ("tls", "4.7.5"),
        ("dns", "4.4.3"),
        ("internal", "4.3.0"),
        ("something-else", "4.4.0"),
    ],
)
def test_connection_reply(kind: str, enhanced: str) -> None:
    reply = connection_reply(kind, "cannot connect: [Errno 111] Connection refused")
    assert reply == SmtpReply(451, enhanced, "cannot connect: [Errno 111] Connection refused")
    assert reply.is_temporary
    for stage in ("connect", "mail", "rcpt", "data"):
        assert classify(stage, reply) is TEMPORARY

"""mailgate.headers: the lean header scan and the Received header the relay adds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.headers import HeaderInfo, built_info, received_header, rfc5322_date, scan
from mailgate.mime import Mailbox, MessageSpec, build


def info(
    received: int = 0,
    has_date: bool = False,
    has_message_id: bool = False,
    message_id: str = "",
    subject: str = "",
) -> HeaderInfo:
    return HeaderInfo(received, has_date, has_message_id, message_id, subject)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: hello\r\n\r\nbody line\r\n",
            info(subject="hello"),
        ),
        # Received: folded ones count once, names are case-insensitive, the body does not count
        (
            b"Received: from a.example (a.example [192.0.2.1])\r\n"
            b"\tby b.example with ESMTPS id 123;\r\n"
            b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"received: from c\r\n"
            b"RECEIVED: from d\r\n"
            b"Received : from e\r\n"
            b"X-Received: by 2002:a05::1 with SMTP id x;\r\n"
            b"ARC-Seal: i=1; received=no\r\n"
            b"Subject: hops\r\n"
            b"\r\n"
            b"Received: from body (not a header)\r\n",
            info(received=4, subject="hops"),
        ),
        # Date and Message-ID
        (
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"Message-ID: <CAF=abc123@mail.gmail.com>\r\n\r\nbody",
            info(has_date=True, has_message_id=True, message_id="<CAF=abc123@mail.gmail.com>"),
        ),
        (
            b"DATE: x\r\nmessage-id:   <spaced@example.com>   \r\n\r\n",
            info(has_date=True, has_message_id=True, message_id="<spaced@example.com>"),
        ),
        # folded Message-ID: the id is on the continuation line
        (
            b"Message-ID:\r\n <folded.123@example.com>\r\nDate: Mon\r\n\r\nbody",
            info(has_date=True, has_message_id=True, message_id="<folded.123@example.com>"),
        ),
        (
            b"Message-ID: \r\n\t<tabbed@example.com>\r\n\r\n",
            info(has_message_id=True, message_id="<tabbed@example.com>"),
        ),
        # Date / Message-ID only in the body do not count
        (
            b"Subject: x\r\n\r\nDate: Mon\r\nMessage-ID: <body@x>\r\n",
            info(subject="x"),
        ),
        # no blank line: everything is header
        (
            b"Received: from a\r\nDate: Tue, 2 Jan 2024 00:00:00 +0000",
            info(received=1, has_date=True),
        ),
        # no headers at all: the header block starts with CRLF (empty header block)
        (b"\r\nReceived: from a\r\nDate: x\r\n\r\nmore\r\n", info()),
        (b"\r\n\r\nDate: x\r\n", info()),
        (b"", info()),
        # a line without a colon does not end the scan and is not a header
        (
            b"this is not a header\r\nReceived: x\r\n\r\n",
            info(received=1),
        ),
    ],
)
def test_scan(data: bytes, expected: HeaderInfo) -> None:
    assert scan(data) == expected


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        (b"Subject: plain text", "plain text"),
        (b"Subject:no space", "no space"),
        (b"Subject:   lots   of    space   ", "lots of space"),
        (b"Subject: Hello\r\n  world", "Hello world"),
        (b"Subject: Hello\r\n\tworld\r\n again", "Hello world again"),
        (b"Subject:\r\n folded from the start", "folded from the start"),
        # RFC 2047, UTF-8 base64 and Q
        (b"Subject: =?UTF-8?B?w6lsw6h2ZQ==?=", "\u00e9l\u00e8ve"),
        (b"Subject: =?utf-8?b?8J+agCBMYXVuY2g=?=", "\U0001f680 Launch"),
        (b"Subject: =?UTF-8?Q?Caf=C3=A9_au_lait?=", "Caf\u00e9 au lait"),
        (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "Gr\u00fc\u00dfe"),
        (b"Subject: Re: =?UTF-8?Q?Caf=C3=A9?= now", "Re: Caf\u00e9 now"),
        (b"Subject: =?ISO-8859-1?Q?Andr=E9?= Pirard", "Andr\u00e9 Pirard"),
        # two encoded words on folded lines: the whitespace between them disappears
        (
            b"Subject: =?UTF-8?B?w6lsw6h2ZQ==?=\r\n =?UTF-8?Q?_et_caf=C3=A9?=",
            "\u00e9l\u00e8ve et caf\u00e9",
        ),
        # raw UTF-8 (SMTPUTF8 / 8-bit headers)
        ("Subject: Gr\u00fc\u00dfe aus K\u00f6ln".encode(), "Gr\u00fc\u00dfe aus K\u00f6ln"),
        # undecodable: kept as written
        (b"Subject: =?x-unknown-charset?Q?abc?=", "=?x-unknown-charset?Q?abc?="),
        (b"Subject: price =? 5", "price =? 5"),
        # only the first Subject counts
        (b"Subject: first\r\nSubject: second", "first"),
    ],
)
def test_scan_subject(header: bytes, subject: str) -> None:
    assert scan(header + b"\r\nFrom: a@example.com\r\n\r\nbody\r\n").subject == subject


def test_scan_subject_is_truncated() -> None:
    assert scan(b"Subject: " + b"x" * 2000 + b"\r\n\r\n").subject == "x" * 998


def test_only_the_start_of_a_long_subject_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding encoded words takes time that grows with the square of their number: only
    what can make the 998 characters kept is read (a 2 MB subject held the listener 6 s)."""
    import mailgate.headers as headers

    seen: list[int] = []
    real = headers.decode_header
    monkeypatch.setattr(headers, "decode_header", lambda text: seen.append(len(text)) or real(text))
    words = b"".join(b"\tw%06d =?utf-8?q?x?=\r\n" % i for i in range(80_000))
    subject = scan(b"Subject: " + words + b"\r\n\r\nbody\r\n").subject
    assert subject.startswith("w000000 x w000001 x") and len(subject) == 998
    assert seen and max(seen) <= 20_000


def test_scan_invalid_utf8_does_not_raise() -> None:
    result = scan(b"Subject: caf\xe9\r\nMessage-ID: <\xff@x>\r\n\r\n")
    assert result.subject == "caf\ufffd"
    assert result.message_id == "<\ufffd@x>"


def test_scan_keeps_only_text_a_store_can_hold() -> None:
    """NUL (PostgreSQL's text refuses it) and bytes that are not UTF-8 never reach the
    subject and Message-ID columns, however they come: raw or in an encoded word."""
    got = scan(b"Subject: a\x00b \xff =?utf-8?q?x=00y?=\r\nMessage-ID: <x\x00y@z>\r\n\r\nhi\r\n")
    assert got.subject == "ab \ufffd =?utf-8?q?x=00y?="  # encoded words only in ASCII text
    assert got.message_id == "<xy@z>"
    assert scan(b"Subject: =?utf-8?q?x=00y_=C3=A9?=\r\n\r\n").subject == "xy \u00e9"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
        (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 +0000"),
        (1_700_000_000.9, "Tue, 14 Nov 2023 22:13:20 +0000"),
    ],
)
def test_rfc5322_date(ts: float, expected: str) -> None:
    assert rfc5322_date(ts) == expected


@pytest.mark.parametrize(
    ("helo", "address", "protocol", "first_line"),
    [
        (
            "mail.example.com",
            "192.0.2.1",
            "ESMTPSA",
            "Received: from mail.example.com ([192.0.2.1])",
        ),
        ("[192.0.2.1]", "192.0.2.1", "ESMTP", "Received: from [192.0.2.1] ([192.0.2.1])"),
        ("", "192.0.2.1", "ESMTPS", "Received: from unknown ([192.0.2.1])"),
        ("   ", "192.0.2.1", "ESMTPA", "Received: from unknown ([192.0.2.1])"),
        ("app.local", "", "HTTP", "Received: from app.local ([unknown])"),
        # unsafe characters are removed from the HELO: no header injection, no spaces
        (
            "evil.example\r\nX-Injected: yes",
            "192.0.2.1",
            "ESMTP",
            "Received: from evil.exampleX-Injected:yes ([192.0.2.1])",
        ),
        ("a\tb\x00c\x7fd e", "192.0.2.1", "ESMTP", "Received: from abcde ([192.0.2.1])"),
        ("h\u00e9llo", "192.0.2.1", "ESMTP", "Received: from h?llo ([192.0.2.1])"),
        # nothing that would change the header's structure: a comment, an early ";"
        (
            "evil.example(unclosed;<x>",
            "192.0.2.1",
            "ESMTP",
            "Received: from evil.example?unclosed??x? ([192.0.2.1])",
        ),
        ("[IPv6:::1]", "::1", "ESMTP", "Received: from [IPv6:::1] ([IPv6:::1])"),
    ],
)
def test_received_header(helo: str, address: str, protocol: str, first_line: str) -> None:
    header = received_header(
        helo=helo,
        address=address,
        hostname="relay.example.com",
        protocol=protocol,
        queue_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        ts=1_700_000_000,
    )
    assert header == (
        f"{first_line}\r\n"
        f"\tby relay.example.com (mailgate) with {protocol} id "
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b;\r\n"
        "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    ).encode("ascii")
    # it is a valid header block for scan(): one Received header
    assert scan(header + b"\r\nbody").received == 1


def test_received_header_helo_is_truncated() -> None:
    header = received_header(
        helo="a" * 400, address="192.0.2.1", hostname="h", protocol="ESMTP", queue_id="q", ts=0
    )
    assert header.split(b"\r\n")[0] == b"Received: from " + b"a" * 255 + b" ([192.0.2.1])"


def test_received_header_ipv6_address_literal() -> None:
    # BUG (src/mailgate/headers.py, received_header line 89): an IPv6 client address is
    # written as "[::1]"; RFC 5321 4.1.3 / 4.4 (TCP-info = address-literal) requires the
    # "IPv6:" tag: "[IPv6:::1]" (as Postfix and Exim write it).
    header = received_header(
        helo="client.test", address="::1", hostname="h", protocol="ESMTP", queue_id="q", ts=0
    )
    assert header.split(b"\r\n")[0] == b"Received: from client.test ([IPv6:::1])"


_subjects = st.text(
    alphabet=st.sampled_from(["a", "Z", "0", " ", "\t", "=", "?", "_", "é", "\u2028", "\x7f"]),
    min_size=1,
    max_size=40,
) | st.builds(lambda n: "word " * n, st.integers(150, 400))


@settings(max_examples=1500, deadline=None)
@given(
    _subjects,
    st.lists(
        st.tuples(st.sampled_from(["X-Tag", "List-Id", "Reply-To"]), st.text(max_size=2000)),
        max_size=2,
    ),
)
def test_what_an_api_message_says_of_itself_is_what_scan_reads(
    subject: str, extra: list[tuple[str, str]]
) -> None:
    extra = [(n, v) for n, v in extra if not _CONTROL_IN_HEADER.search(v)]
    data = build(
        MessageSpec(
            sender=Mailbox("a@example.com", "A"),
            to=[Mailbox("b@example.net")],
            subject=subject,
            text="hi",
            headers=extra,
        )
    )
    known = built_info(subject)
    if known is not None:
        assert known == scan(data)
    else:  # encoded or folded: read from the message
        assert not subject.isascii() or "=?" in subject or len(subject) > 900


_CONTROL_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what prepare refuses


def test_an_api_subject_that_reads_as_encoded_words_is_read_from_the_message() -> None:
    subject = "=?utf-8?q?caf=C3=A9?="  # sent as is, and read back decoded, as from SMTP
    data = build(MessageSpec(sender=Mailbox("a@example.com"), to=[], subject=subject, text="x"))
    assert built_info(subject) is None
    assert scan(data).subject == "café"

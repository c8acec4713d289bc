"""The fast MAIL/RCPT address parser answers exactly as aiosmtpd's own parser does, but
for encoded words (RFC 2047), which aiosmtpd decodes and the relay does not, and for an
angle address that is not closed, or not followed by a space, which aiosmtpd takes."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.ingress.smtp_session import _CLOSED_ANGLE, RelaySMTP


def parsers() -> tuple[RelaySMTP, SMTP]:
    ours = RelaySMTP.__new__(RelaySMTP)
    theirs = SMTP.__new__(SMTP)
    for p in (ours, theirs):
        p.local_part_limit = 0
    return ours, theirs


@pytest.mark.parametrize(
    "arg",
    [
        "<a@example.com>",
        "<a@example.com> SIZE=100 BODY=8BITMIME",
        "<first.last+tag@sub.example.co.uk>",
        "<>",
        "a@example.com",
        '<"quoted local"@example.com>',
        "<a@[127.0.0.1]>",
        "<a(comment)@example.com>",
        "<ü@bücher.de>",
        "<a@@example.com>",
        "<@relay:a@example.com>",
        "< a@example.com >",
    ],
)
def test_same_answer_as_aiosmtpd(arg: str) -> None:
    ours, theirs = parsers()
    assert RelaySMTP._getaddr(ours, arg) == SMTP._getaddr(theirs, arg)


@given(
    st.text(alphabet=st.sampled_from(list('ab.@<>"()[] =?+-_:;,\\\tü1')), min_size=0, max_size=30)
)
@settings(max_examples=1500, deadline=None, database=None)
def test_same_answer_as_aiosmtpd_for_generated_input(arg: str) -> None:
    ours, theirs = parsers()
    if "=?" in arg:
        return  # test_encoded_words_are_not_decoded
    if arg.startswith("<") and not _CLOSED_ANGLE.match(arg):
        assert RelaySMTP._getaddr(ours, arg) == (None, None)  # test_unclosed_angle_address
        return
    try:
        expected = SMTP._getaddr(theirs, arg)
    except Exception as exc:  # aiosmtpd's parser raises on some garbage; so must we
        with pytest.raises(type(exc)):
            RelaySMTP._getaddr(ours, arg)
        return
    assert RelaySMTP._getaddr(ours, arg) == expected


@pytest.mark.parametrize(
    "arg", ["<a@example.com", "<a@example.com>SIZE=1", '<"x y"@example.com>BODY=8BITMIME']
)
def test_unclosed_angle_address(arg: str) -> None:
    """Refused (553), where aiosmtpd took the address; Postfix says 501 5.1.7."""
    ours, _ = parsers()
    assert RelaySMTP._getaddr(ours, arg) == (None, None)


def test_local_part_limit_is_kept() -> None:
    ours, theirs = parsers()
    ours.local_part_limit = theirs.local_part_limit = 3
    for arg in ("<abcd@example.com>", "<abc@example.com>"):
        assert RelaySMTP._getaddr(ours, arg) == SMTP._getaddr(theirs, arg)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<=?utf-8?q?x?=@example.com>", ("=?utf-8?q?x?=@example.com", "")),  # a dot-atom
        ("<r@=?utf-8?q?evil.test?=>", (None, None)),  # aiosmtpd: r@evil.test
        ('<"a b"@=?utf-8?q?x?=>', (None, None)),
        ("<=?utf-8?q?x?= y@example.com>", (None, None)),
    ],
)
def test_encoded_words_are_not_decoded(arg: str, expected: tuple[str | None, str | None]) -> None:
    ours, _ = parsers()
    assert RelaySMTP._getaddr(ours, arg) == expected

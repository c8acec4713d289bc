"""Messages go out with exactly the bytes aiosmtplib would send (big ones in pieces), and
the envelope commands exactly as its mail() and rcpt() write them."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailgate.transports.smtp_wire import CHUNK, envelope_commands, wire_pieces


def _aiosmtplib_wire(data: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))


def _tricky(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    parts = [b"Subject: x\r\n\r\n"]
    total = 0
    while total < size:
        part = rng.choice(
            [b"line\r\n", b".dot\r\n", b"bare lf\n", b"bare cr\r", b"\r\n", b".\r\n", b"\n.\n"]
        ) + b"x" * rng.randrange(0, 200)
        parts.append(part)
        total += len(part)
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(5))
def test_pieces_are_the_wire_form(seed: int) -> None:
    data = _tricky(3 * CHUNK + 17, seed)
    pieces = list(wire_pieces(data))
    assert len(pieces) > 3  # really cut
    assert b"".join(pieces) == _aiosmtplib_wire(data)


@pytest.mark.parametrize(
    "data",
    [b"no newline at the end", b"ends with cr\r", b".\r\n", b"a\n" * (CHUNK // 2) + b"."],
)
def test_edges(data: bytes) -> None:
    assert b"".join(wire_pieces(data)) == _aiosmtplib_wire(data)


def test_one_long_line_is_one_piece() -> None:
    data = b"y" * (2 * CHUNK) + b"\r\n.z\r\n"
    assert b"".join(wire_pieces(data)) == _aiosmtplib_wire(data)


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: clean\r\n\r\nCRLF only, no dot at a line start.\r\n",  # both skipped
        b"Subject: dots\r\n\r\n.one\r\nmid.dle\r\n..two\r\n",  # only the dots doubled
        b".first line\r\n",
        b"",
    ],
)
def test_messages_that_need_no_change_or_only_dots(data: bytes) -> None:
    assert b"".join(wire_pieces(data)) == _aiosmtplib_wire(data)


def test_short_messages_of_line_ends_and_dots() -> None:
    """Each substitution is skipped only where it would change nothing: every mix of
    letters, dots, CRs and LFs gives aiosmtplib's bytes."""
    rng = random.Random(18)
    for _ in range(20_000):
        data = bytes(rng.choice(b"a.\r\n") for _ in range(rng.randrange(0, 14)))
        assert b"".join(wire_pieces(data)) == _aiosmtplib_wire(data), data


def test_envelope_lines_are_aiosmtplibs() -> None:
    """Plain addresses are quoted without parsing them; each line is what aiosmtplib's
    mail() and rcpt() write, for plain addresses and for every other kind."""
    rng = random.Random(18)
    alphabet = "ab.-_+'!#=?~@ \"()<>,;:[]\\é"
    addresses = [
        "",
        "bench@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        '"quoted local"@example.com',
        "Name <addr@example.com>",
        "user@[192.0.2.1]",
        "ünï@example.com",
        "a..b@example.com",
        ".a@example.com",
        "a@example..com",
        "a@-example.com",
    ]
    addresses += [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16))) for _ in range(5000)
    ]
    for address in addresses:
        try:
            expected = quote_address(address).encode("utf-8")
        except ValueError:  # refused by aiosmtplib: by us too
            with pytest.raises(ValueError):
                envelope_commands(address, [address], [], "utf-8")
            continue
        ours = envelope_commands(address, [address], [], "utf-8")
        assert ours == [b"MAIL FROM:" + expected + b"\r\n", b"RCPT TO:" + expected + b"\r\n"]

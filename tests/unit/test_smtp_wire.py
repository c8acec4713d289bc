"""Big messages go out in pieces with exactly the bytes aiosmtplib would send whole."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailgate.transports.smtp_wire import CHUNK, wire_pieces


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

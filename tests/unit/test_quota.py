"""Key quotas: what a quota says, its calendar periods (UTC), and how a batch is cut."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailgate.quota import Quota, fitting, parse_quota


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10000/month", Quota(10000, "month")),
        ("500/d", Quota(500, "day")),
        (" 500 / Day ", Quota(500, "day")),
        ("2147483647/month", Quota(2**31 - 1, "month")),
    ],
)
def test_parse(text: str, expected: Quota) -> None:
    assert parse_quota(text) == expected


@pytest.mark.parametrize(
    "text", ["", "0/d", "-1/d", "10/m", "10/h", "10/week", "ten/d", "10", "2147483648/month"]
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quota"):
        parse_quota(text)


def test_periods_are_utc_calendar_periods() -> None:
    day, month = Quota(1, "day"), Quota(1, "month")
    assert day.period(ts(2026, 12, 3, 23, 59, 59)) == "2026-12-03"
    assert month.period(ts(2026, 12, 31, 23, 59, 59)) == "2026-12"
    assert month.period(ts(2027, 1, 1)) == "2027-01"
    assert day.seconds_left(ts(2026, 12, 3, 23, 59, 0)) == 60
    assert month.seconds_left(ts(2026, 12, 31, 23, 0, 0)) == 3600
    assert month.seconds_left(ts(2026, 2, 28, 0, 0, 0)) == 86400


def test_a_batch_takes_what_is_left_in_order() -> None:
    assert fitting([1, 1, 1, 1, 1], 3) == 3
    assert fitting([2, 2, 1], 3) == 1  # the rest after the first that does not fit
    assert fitting([1, 2], 0) == 0
    assert fitting([], 5) == 0
    assert fitting([3], 3) == 1

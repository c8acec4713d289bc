"""iso(): the answers' timestamps, made from a per-second cache, must read exactly as
datetime's own formatting of the same float (its rounding to the microsecond included)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from mailgate.ingress.http_params import iso


def _reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_none_stays_none() -> None:
    assert iso(None) is None


@pytest.mark.parametrize(
    "ts",
    [
        0.0,
        1e-7,
        5e-7,
        0.9999995,  # rounds up into the next second
        1.9999996,
        1.0000005,
        1_700_000_000.0009995,
        2_283_335_247.3039994,  # a float whose ts * 1e6 rounds the other way
        -1.5,  # before 1970: still formatted
        4_102_444_800.0,  # 2100-01-01
    ],
)
def test_edges_read_as_datetime_does(ts: float) -> None:
    assert iso(ts) == _reference(ts)


def test_many_times_read_as_datetime_does() -> None:
    rng = random.Random(18)
    values = [rng.uniform(0, 4e9) for _ in range(20_000)]
    values += [1_765_000_000 + rng.random() * 5 for _ in range(20_000)]  # same seconds
    values += [rng.randint(0, 4_000_000_000) + k / 1000 for k in range(1000)]
    assert [iso(v) for v in values] == [_reference(v) for v in values]

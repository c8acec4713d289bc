"""mailgate.delivery.retry: exponential, jittered backoff between min and max; expiry."""

from __future__ import annotations

import random

import pytest

from mailgate.config_sending import RetrySettings
from mailgate.delivery.retry import backoff, expired

ALMOST_ONE = 1.0 - 2**-53  # the largest value random.random() can return


class FixedRandom(random.Random):
    """An rng whose random() always returns the same value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def settings(
    min_backoff: float = 300, max_backoff: float = 14_400, jitter: float = 0.2
) -> RetrySettings:
    return RetrySettings(min_backoff=min_backoff, max_backoff=max_backoff, jitter=jitter)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (0, 300.0),
        (1, 300.0),
        (2, 600.0),
        (3, 1200.0),
        (4, 2400.0),
        (5, 4800.0),
        (6, 9600.0),
        (7, 14_400.0),  # 19200 capped at max_backoff
        (8, 14_400.0),
        (31, 14_400.0),
        (1000, 14_400.0),
    ],
)
def test_backoff_doubles_from_min_to_max_without_jitter(attempts: int, expected: float) -> None:
    assert backoff(attempts, settings(jitter=0), random.Random(1)) == expected
    # with jitter, an rng in the middle of its range gives the plain exponential value
    assert backoff(attempts, settings(), FixedRandom(0.5)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (1, 270.0, 330.0),
        (2, 540.0, 660.0),
        (3, 1080.0, 1320.0),
        (6, 8640.0, 10_560.0),
        # at the cap, jitter only goes downwards: never above max_backoff
        (7, 12_960.0, 14_400.0),
        (20, 12_960.0, 14_400.0),
    ],
)
def test_backoff_jitter_bounds(attempts: int, low: float, high: float) -> None:
    s = settings()
    assert backoff(attempts, s, FixedRandom(0.0)) == pytest.approx(low)
    assert backoff(attempts, s, FixedRandom(ALMOST_ONE)) == pytest.approx(high)


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
def test_backoff_random_stays_in_bounds(seed: int, jitter: float) -> None:
    s = settings(min_backoff=60, max_backoff=3600, jitter=jitter)
    rng = random.Random(seed)
    floor = 60 * (1 - jitter / 2)
    for attempts in range(1, 40):
        base = min(60 * 2 ** (attempts - 1), 3600)
        for _ in range(25):
            delay = backoff(attempts, s, rng)
            assert floor <= delay <= 3600
            assert base * (1 - jitter / 2) - 1e-9 <= delay <= base * (1 + jitter / 2) + 1e-9


def test_backoff_seeded_rng_is_reproducible() -> None:
    s = settings()
    first = [backoff(a, s, random.Random(7)) for a in range(1, 10)]
    second = [backoff(a, s, random.Random(7)) for a in range(1, 10)]
    assert first == second
    assert len(set(first)) > 1


def test_backoff_grows_until_max() -> None:
    s = settings(min_backoff=1, max_backoff=1000, jitter=0)
    delays = [backoff(a, s, random.Random(0)) for a in range(1, 15)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000, 1000]


def test_backoff_min_equals_max() -> None:
    s = settings(min_backoff=300, max_backoff=300, jitter=0.2)
    assert backoff(1, s, FixedRandom(ALMOST_ONE)) == 300.0
    assert backoff(5, s, FixedRandom(0.0)) == pytest.approx(270.0)


def test_backoff_without_rng_uses_module_random() -> None:
    s = settings()
    for _ in range(50):
        assert 270.0 <= backoff(1, s) <= 330.0


@pytest.mark.parametrize(
    ("created_at", "now", "expected"),
    [
        (1000.0, 1000.0, False),
        (1000.0, 1000.0 + 432_000 - 0.001, False),
        (1000.0, 1000.0 + 432_000, True),
        (1000.0, 1000.0 + 432_001, True),
        (1000.0, 500.0, False),  # clock went backwards
    ],
)
def test_expired(created_at: float, now: float, expected: bool) -> None:
    assert expired(created_at, now, RetrySettings()) is expected


def test_expired_uses_max_age() -> None:
    s = RetrySettings(max_age="1h")
    assert expired(0, 3599, s) is False
    assert expired(0, 3600, s) is True

"""The claim's two lanes (store/transactions.by_lanes): fresh mail and retries share each
claim, so neither a backlog of retries nor a stream of new mail starves the other."""

from __future__ import annotations

import pytest

from mailgate.store.transactions import FRESH, RETRY, by_lanes


def lanes(fresh: int, retries: int) -> tuple[dict[int, list[str]], list[tuple[int, int]]]:
    """Two queues of due work, and the list of (lane, n) asked of them."""
    return {FRESH: [f"f{i}" for i in range(fresh)], RETRY: [f"r{i}" for i in range(retries)]}, []


def claim(limit: int, fresh: int, retries: int) -> tuple[list[str], list[tuple[int, int]]]:
    queues, asked = lanes(fresh, retries)

    def take(lane: int, n: int) -> list[str]:
        asked.append((lane, n))
        got, queues[lane] = queues[lane][: max(n, 0)], queues[lane][max(n, 0) :]
        return got

    return by_lanes(limit, take), asked


@pytest.mark.parametrize(
    ("limit", "fresh", "retries", "want_fresh", "want_retries"),
    [
        (8, 100, 100, 6, 2),  # both busy: a quarter for retries
        (8, 100, 0, 8, 0),  # no retries: all fresh
        (8, 0, 100, 0, 8),  # no fresh mail: retries fill the claim
        (8, 3, 100, 3, 5),  # fresh mail short: retries take the rest
        (8, 100, 1, 7, 1),  # fewer retries than their quarter: fresh takes the rest
        (1, 100, 100, 0, 1),  # a claim of one still serves the retries first
        (3, 100, 100, 2, 1),  # a quarter rounds down, but is at least one
        (200, 1000, 1000, 150, 50),
    ],
)
def test_shares(limit: int, fresh: int, retries: int, want_fresh: int, want_retries: int) -> None:
    got, _asked = claim(limit, fresh, retries)
    assert len(got) == want_fresh + want_retries <= limit
    assert sum(x.startswith("f") for x in got) == want_fresh
    assert sum(x.startswith("r") for x in got) == want_retries


def test_order_of_the_asks() -> None:
    _got, asked = claim(8, 3, 100)
    assert asked == [(RETRY, 2), (FRESH, 6), (RETRY, 3)]
    _got, asked = claim(8, 100, 100)
    assert asked == [(RETRY, 2), (FRESH, 6)]  # full: the retry lane is not asked twice

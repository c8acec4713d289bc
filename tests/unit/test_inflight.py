"""The in-flight budget: reservations grow in steps, refuse past the cap, give back all."""

from __future__ import annotations

from mailgate.inflight import DEFAULT_CEILING, GROW_STEP, InflightBudget, default_cap


def test_reservations_share_the_cap_and_give_everything_back() -> None:
    budget = InflightBudget(cap=3 * GROW_STEP)
    a, b = budget.reservation("smtp"), budget.reservation("http")
    assert a.ensure(10)
    assert a.amount == GROW_STEP  # a step at a time, not one request per line
    assert b.ensure(2 * GROW_STEP)
    assert not a.ensure(2 * GROW_STEP)  # would need more than the cap
    assert budget.refusals == {"smtp": 1}
    # A refusal lets go of its hold at once (its message is dropped): the others may grow.
    assert a.amount == 0 and budget.used == 2 * GROW_STEP
    assert b.ensure(3 * GROW_STEP)
    a.release()  # as the transaction ends: nothing more to give back
    b.release()
    assert budget.used == 0 and budget.peak <= budget.cap


def test_big_messages_growing_together_are_not_all_refused() -> None:
    """Three 24 MB messages without SIZE=, growing in turns against a 60 MB budget: the
    first refused lets go, and the two that fit are accepted."""
    budget = InflightBudget(cap=60_000_000)
    held = [budget.reservation("smtp") for _ in range(3)]
    alive = [True, True, True]
    for size in range(65_536, 24_000_001, 65_536):
        for i, r in enumerate(held):
            if alive[i] and not r.ensure(size):
                alive[i] = False
    assert alive.count(True) == 2 and budget.refusals == {"smtp": 1}


def test_the_last_bytes_fit_exactly_without_a_whole_step() -> None:
    budget = InflightBudget(cap=GROW_STEP + 100)
    held = budget.reservation("smtp")
    assert held.ensure(GROW_STEP)
    assert held.ensure(GROW_STEP + 100)  # less than a step was left: exactly that
    assert budget.used == budget.cap
    held.release()
    held.release()  # twice is harmless
    assert budget.used == 0


def test_default_is_a_quarter_of_memory_at_most_1gb() -> None:
    assert 0 < default_cap() <= DEFAULT_CEILING

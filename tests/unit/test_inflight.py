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
    assert a.amount == GROW_STEP and budget.used == 3 * GROW_STEP  # a refusal keeps its hold
    a.release()
    b.release()
    assert budget.used == 0 and budget.peak <= budget.cap


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

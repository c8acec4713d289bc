"""The circuit breaker's states, with an injected clock."""

from __future__ import annotations

from mailgate.routing.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(3, 30, clock)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    b.record(True)  # a success resets the count
    for _ in range(3):
        b.record(False)
    assert b.state == "open" and b.blocks() and not b.allow()
    clock.now = 30
    assert b.state == "half-open" and not b.blocks()
    assert b.allow()  # one probe
    assert not b.allow()  # and only one
    b.record(False)
    assert b.state == "open"
    clock.now = 60
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.allow() and b.allow()


def test_late_failures_do_not_extend_the_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(2, 30, clock)
    b.record(False)
    b.record(False)  # opens at 0
    clock.now = 20
    b.record(False)  # an attempt that started before it opened
    clock.now = 30
    assert b.state == "half-open"

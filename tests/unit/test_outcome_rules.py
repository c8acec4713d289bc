"""mailgate.delivery.outcome: which state a delivery takes after an attempt's result, when
it is tried again, and what an unfinished attempt leaves (no store, no clock: ``now`` is
passed in). The categories are in test_outcome_category.py."""

from __future__ import annotations

import pytest

from mailgate.config import Settings
from mailgate.delivery.classify import parse_reply
from mailgate.delivery.outcome import unfinished, update_for
from mailgate.models import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryStatus,
    DeliveryUpdate,
    Outcome,
    QueuedMessage,
)

NOW = 1_800_000_000.0
MAX_AGE = 3600.0

SETTINGS = Settings.model_validate(
    {
        "domains": [{"name": "example.com"}],
        "providers": [{"name": "c", "kind": "maildir", "path": "/nonexistent"}],
        # No jitter: the next attempt's time is exact.
        "retry": {"min_backoff": "60s", "max_backoff": "10m", "max_age": "1h", "jitter": 0},
    }
)


def result(outcome: Outcome, code: int, text: str, provider: str = "up") -> AttemptResult:
    return AttemptResult(outcome, parse_reply(code, text), provider, "data")


SENT = result(Outcome.SENT, 250, "2.0.0 Ok: queued as 4XyZ12AbC")
LATER = result(Outcome.TEMPORARY, 451, "4.3.0 try later")
NO_USER = result(Outcome.PERMANENT, 550, "5.1.1 no such user")


def message(age: float = 0.0, attempts: int = 0, *, attempt_once: bool = False) -> QueuedMessage:
    deliveries = [ClaimedDelivery("m", i, f"r{i}@dest.test", attempts, "queued") for i in range(2)]
    return QueuedMessage(
        "m", "app@example.com", b"", NOW - age, deliveries, attempt_once=attempt_once
    )


def update(r: AttemptResult, msg: QueuedMessage | None = None, **kw: object) -> DeliveryUpdate:
    msg = msg or message()
    return update_for(SETTINGS, msg, msg.deliveries[0], r, [], NOW, **kw)  # type: ignore[arg-type]


def test_accepted_is_sent_or_delivered_and_final() -> None:
    u = update(SENT)
    assert (u.status, u.event, u.next_attempt_at) == (DeliveryStatus.SENT, "sent", None)
    assert u.attempts == 1 and u.provider == "up" and u.response.startswith("250 2.0.0")
    assert u.provider_message_id == "4XyZ12AbC"
    assert update(SENT, direct=True).status is DeliveryStatus.DELIVERED  # by the MX itself


def test_a_permanent_refusal_bounces_at_once_whatever_the_age() -> None:
    for msg in (message(), message(age=2 * MAX_AGE), message(attempt_once=True)):
        u = update(NO_USER, msg)
        assert (u.status, u.next_attempt_at, u.provider_message_id) == (
            DeliveryStatus.BOUNCED,
            None,
            "",
        )


@pytest.mark.parametrize(("attempts", "delay"), [(0, 60), (1, 120), (2, 240), (4, 600), (9, 600)])
def test_a_temporary_failure_defers_by_the_backoff_of_its_attempt(
    attempts: int, delay: float
) -> None:
    u = update(LATER, message(attempts=attempts))
    assert u.status is DeliveryStatus.DEFERRED and u.attempts == attempts + 1
    assert u.next_attempt_at == NOW + delay


def test_a_temporary_failure_past_max_age_fails_and_just_before_defers() -> None:
    assert update(LATER, message(age=MAX_AGE)).status is DeliveryStatus.FAILED
    assert update(LATER, message(age=MAX_AGE)).next_attempt_at is None
    assert update(LATER, message(age=MAX_AGE - 1)).status is DeliveryStatus.DEFERRED


def test_attempt_once_fails_on_the_first_temporary_failure() -> None:
    u = update(LATER, message(attempt_once=True))
    assert (u.status, u.next_attempt_at) == (DeliveryStatus.FAILED, None)


def test_may_fail_false_defers_even_past_max_age() -> None:
    for msg in (message(age=2 * MAX_AGE), message(attempt_once=True)):
        u = update(LATER, msg, may_fail=False)
        assert u.status is DeliveryStatus.DEFERRED and u.next_attempt_at == NOW + 60


def test_failovers_before_the_result_are_kept_in_order() -> None:
    msg = message()
    failed = [result(Outcome.TEMPORARY, 421, "4.7.0 busy", "a"), LATER]
    u = update_for(SETTINGS, msg, msg.deliveries[1], SENT, failed, NOW)
    assert u.rcpt_idx == 1 and u.recipient == "r1@dest.test"
    assert [p for p, _ in u.failovers] == ["a", "up"]
    assert u.failovers[0][1].startswith("421 4.7.0")


def test_an_unfinished_attempt_defers_every_delivery_with_a_local_4_3_0() -> None:
    record = unfinished(SETTINGS, message(age=2 * MAX_AGE, attempts=1), "delivery died", NOW)
    assert [u.rcpt_idx for u in record.updates] == [0, 1]
    for u in record.updates:
        assert u.status is DeliveryStatus.DEFERRED and u.next_attempt_at == NOW + 120
        assert u.response.startswith("451 4.3.0") and "delivery died" in u.response
        assert u.provider == ""
    assert record.dkim is None and record.suppress == [] and record.dsns == []

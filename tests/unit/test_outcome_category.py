"""mailgate.delivery.outcome: the category an attempt's result carries to its event."""

from __future__ import annotations

from mailgate.config import Settings
from mailgate.delivery.classify import parse_reply
from mailgate.delivery.outcome import update_for
from mailgate.models import AttemptResult, ClaimedDelivery, Outcome, QueuedMessage

NOW = 1_800_000_000.0
DAY = 86_400.0


def _result(outcome: Outcome, code: int, text: str) -> AttemptResult:
    return AttemptResult(outcome, parse_reply(code, text), "up", "rcpt")


def _update(created_at: float, result: AttemptResult, *, attempt_once: bool = False):  # type: ignore[no-untyped-def]
    settings = Settings.model_validate(
        {
            "domains": [{"name": "example.com"}],
            "providers": [{"name": "c", "kind": "maildir", "path": "/nonexistent"}],
        }
    )
    d = ClaimedDelivery("m", 0, "a@dest.test", 0, "queued")
    msg = QueuedMessage("m", "app@example.com", b"", created_at, [d], attempt_once=attempt_once)
    return update_for(settings, msg, d, result, [], NOW)


def test_bounce_and_deferral_carry_the_reply_category() -> None:
    bounced = _update(NOW, _result(Outcome.PERMANENT, 550, "5.1.1 no such user"))
    assert (bounced.status.value, bounced.category) == ("bounced", "InvalidRecipient")
    deferred = _update(NOW, _result(Outcome.TEMPORARY, 452, "4.2.2 mailbox full"))
    assert (deferred.status.value, deferred.category) == ("deferred", "QuotaIssues")


def test_expiry_is_message_expired_whatever_the_last_reply() -> None:
    failed = _update(NOW - 6 * DAY, _result(Outcome.TEMPORARY, 451, "4.4.1 connection refused"))
    assert (failed.status.value, failed.category) == ("failed", "MessageExpired")


def test_attempt_once_failure_keeps_the_reply_category() -> None:
    failed = _update(NOW, _result(Outcome.TEMPORARY, 451, "4.4.2 timed out"), attempt_once=True)
    assert (failed.status.value, failed.category) == ("failed", "BadConnection")


def test_a_success_has_no_category() -> None:
    sent = _update(NOW, _result(Outcome.SENT, 250, "2.0.0 OK"))
    assert (sent.status.value, sent.category) == ("sent", "")

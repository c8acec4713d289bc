"""routing/status.py: last success and error, and the attempt rate of the last minute."""

from __future__ import annotations

from mailgate.models import AttemptResult, Outcome, SmtpReply
from mailgate.routing.status import WINDOW, Health

OK = AttemptResult(Outcome.SENT, SmtpReply(250, "2.0.0", "ok"), "p", "data")
DOWN = AttemptResult(Outcome.TEMPORARY, SmtpReply(421, "4.4.2", "no answer"), "p", "connect")
NO_USER = AttemptResult(Outcome.PERMANENT, SmtpReply(550, "5.1.1", "no such user"), "p", "rcpt")


def test_last_error_and_last_success() -> None:
    h = Health()
    h.record([DOWN], 1000.0)
    assert (h.last_error_at, h.last_success_at) == (1000.0, None)
    assert h.last_error.startswith("connect: 421")
    h.record([OK], 1001.0)
    assert h.last_success_at == 1001.0 and h.last_error_at == 1000.0
    # A recipient refused by its domain: the provider itself works.
    h.record([NO_USER], 1002.0)
    assert h.last_success_at == 1002.0 and h.last_error_at == 1000.0


def test_rate_counts_the_last_minute_only() -> None:
    h = Health()
    for i in range(120):
        h.record([OK], 1000.0 + i / 2)  # 2 per second for 60 s
    assert h.rate(1059.9) == 120 / WINDOW
    assert h.rate(1089.5) == 60 / WINDOW  # the first 30 s are out of the window
    assert h.rate(2000.0) == 0.0
    h.record([OK], 2000.5)
    assert h.rate(2000.5) == 1 / WINDOW

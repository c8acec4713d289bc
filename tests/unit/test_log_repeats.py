"""A failure that recurs every second (a full disk, a database away) is logged once a
minute with its count, not once a second."""

from __future__ import annotations

import logging

import pytest


def test_a_recurring_failure_is_said_once_a_minute_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mailgate.logs import Repeats

    now = [0.0]
    logger = logging.getLogger("mailgate.test.repeats")
    repeats = Repeats(logger, logging.WARNING, every=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="mailgate.test.repeats"):
        for second in range(150):  # a failure every second for 150 s
            now[0] = float(second)
            repeats.log("write failed: %s", "disk full")
        repeats.ok()  # it worked again: the next failure is said at once
        repeats.log("write failed: %s", "gone")
    assert [r.getMessage() for r in caplog.records] == [
        "write failed: disk full",
        "write failed: disk full (and 59 times more in the last 60 s)",
        "write failed: disk full (and 59 times more in the last 60 s)",
        "write failed: gone",
    ]

"""mailgate.models: SmtpReply and DeliveryStatus."""

from __future__ import annotations

import dataclasses

import pytest

from mailgate.models import DeliveryStatus, Outcome, SmtpReply


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (SmtpReply(250, "2.0.0", "Ok: queued as abc"), "250 2.0.0 Ok: queued as abc"),
        (SmtpReply(553, "5.1.7", "Sender address rejected"), "553 5.1.7 Sender address rejected"),
        (
            SmtpReply(354, "", "End data with <CR><LF>.<CR><LF>"),
            "354 End data with <CR><LF>.<CR><LF>",
        ),
        (SmtpReply(421, "4.3.2", ""), "421 4.3.2 "),
        (SmtpReply(220, "", ""), "220 "),
    ],
)
def test_line(reply: SmtpReply, line: str) -> None:
    assert reply.line() == line
    assert str(reply) == line


@pytest.mark.parametrize(
    ("code", "temporary", "permanent"),
    [
        (220, False, False),
        (250, False, False),
        (354, False, False),
        (399, False, False),
        (400, True, False),
        (421, True, False),
        (451, True, False),
        (499, True, False),
        (500, False, True),
        (550, False, True),
        (554, False, True),
    ],
)
def test_temporary_and_permanent(code: int, temporary: bool, permanent: bool) -> None:
    reply = SmtpReply(code, "", "x")
    assert reply.is_temporary is temporary
    assert reply.is_permanent is permanent


def test_smtp_reply_is_frozen_and_comparable() -> None:
    reply = SmtpReply(250, "2.0.0", "OK")
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.code = 550  # type: ignore[misc]
    assert reply == SmtpReply(250, "2.0.0", "OK")
    assert hash(reply) == hash(SmtpReply(250, "2.0.0", "OK"))
    assert reply != SmtpReply(250, "2.0.0", "Ok")


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (DeliveryStatus.SCHEDULED, False),
        (DeliveryStatus.QUEUED, False),
        (DeliveryStatus.DEFERRED, False),
        (DeliveryStatus.SENT, True),
        (DeliveryStatus.DELIVERED, True),
        (DeliveryStatus.BOUNCED, True),
        (DeliveryStatus.FAILED, True),
        (DeliveryStatus.CANCELLED, True),
        (DeliveryStatus.HELD, False),
    ],
)
def test_delivery_status_is_final(status: DeliveryStatus, final: bool) -> None:
    assert status.is_final is final


def test_delivery_status_values() -> None:
    assert [s.value for s in DeliveryStatus] == [
        "scheduled",
        "queued",
        "deferred",
        "held",
        "sent",
        "delivered",
        "bounced",
        "failed",
        "cancelled",
    ]
    assert DeliveryStatus("deferred") is DeliveryStatus.DEFERRED
    assert DeliveryStatus.SENT == "sent"


def test_outcome_values() -> None:
    assert [o.value for o in Outcome] == ["sent", "temporary", "permanent"]


def test_no_named_write_statement_has_an_expanding_parameter() -> None:
    """The writer merges the rows of every job in a group commit that names the same
    statement into one executemany, which refuses an "expanding" (bound IN list) parameter."""
    from sqlalchemy.dialects import postgresql, sqlite

    from mailgate.store.statements import write_statements

    for name, dialect in (("sqlite", sqlite.dialect()), ("postgresql", postgresql.dialect())):
        for op, stmt in write_statements(name).items():
            binds = stmt.compile(dialect=dialect).binds
            assert not [k for k, b in binds.items() if b.expanding], (name, op)

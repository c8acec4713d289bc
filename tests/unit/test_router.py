"""The router as a pure decision over scripted transports: order, failover, what ends a
recipient, breakers and pinned providers (no sockets; injected transports and clock)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailgate.config import load_settings
from mailgate.models import AttemptResult, Outcome, SmtpReply
from mailgate.routing.router import Router

OK = SmtpReply(250, "2.0.0", "queued")
LATER = SmtpReply(451, "4.3.0", "try later")
NO_USER = SmtpReply(550, "5.1.1", "no such user")
AUTH = SmtpReply(535, "5.7.8", "bad credentials")


class Scripted:
    """A transport answering each recipient from a script (one reply for all recipients,
    or per recipient), noting who it was asked to deliver to and with what options."""

    direct = False

    def __init__(self, name: str, *answers: tuple[Outcome, SmtpReply, str]) -> None:
        self.name = name
        self.answers = list(answers)
        self.calls: list[list[str]] = []
        self.options: list[dict[str, Any]] = []

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        self.calls.append(list(recipients))
        self.options.append({"gate": gate, "tls_policy": tls_policy})
        outcome, reply, stage = self.answers.pop(0) if self.answers else (Outcome.SENT, OK, "data")
        return [AttemptResult(outcome, reply, self.name, stage) for _ in recipients]

    async def close(self) -> None:
        return None


def settings(tmp_path: Path, providers: list[dict[str, Any]], **extra: Any) -> Any:
    for p in providers:
        p.setdefault("kind", "smtp")
        p.setdefault("host", "127.0.0.1")
    return load_settings(data={"providers": providers, **extra}, environ={})


def route(router: Router, rcpts: list[str], **kw: Any) -> list[AttemptResult]:
    return asyncio.run(router.deliver(None, "a@example.com", rcpts, b"x", **kw)).results


def test_priority_order_and_failover_on_a_temporary_failure(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "b", "priority": 20}, {"name": "a", "priority": 10}])
    a = Scripted("a", (Outcome.TEMPORARY, LATER, "data"))
    b = Scripted("b")
    (r,) = route(Router(s, {"a": a, "b": b}), ["x@dest.test"])
    assert r.outcome is Outcome.SENT and r.provider == "b"
    assert a.calls == [["x@dest.test"]] and b.calls == [["x@dest.test"]]


def test_a_recipient_refusal_ends_it_without_failover(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "priority": 10}, {"name": "b", "priority": 20}])
    a = Scripted("a", (Outcome.PERMANENT, NO_USER, "rcpt"))
    b = Scripted("b")
    (r,) = route(Router(s, {"a": a, "b": b}), ["x@dest.test"])
    assert r.outcome is Outcome.PERMANENT and r.provider == "a" and b.calls == []


def test_a_provider_level_5xx_fails_over_and_bounces_only_if_all_refuse(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "priority": 10}, {"name": "b", "priority": 20}])
    a = Scripted("a", (Outcome.PERMANENT, AUTH, "auth"))
    b = Scripted("b", (Outcome.PERMANENT, AUTH, "auth"))
    (r,) = route(Router(s, {"a": a, "b": b}), ["x@dest.test"])
    assert r.outcome is Outcome.PERMANENT and r.provider == "b"
    a2 = Scripted("a", (Outcome.PERMANENT, AUTH, "auth"))
    b2 = Scripted("b", (Outcome.TEMPORARY, LATER, "data"))
    (r,) = route(Router(s, {"a": a2, "b": b2}), ["x@dest.test"])
    assert r.outcome is Outcome.TEMPORARY  # one provider only said later: retry


def test_an_open_breaker_is_skipped_and_none_left_defers(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "breaker_failures": 1, "breaker_cooldown": "60s"}])
    now = [1000.0]
    a = Scripted("a", (Outcome.TEMPORARY, LATER, "connect"))
    router = Router(s, {"a": a}, clock=lambda: now[0])
    (first,) = route(router, ["x@dest.test"])
    assert first.outcome is Outcome.TEMPORARY
    (second,) = route(router, ["x@dest.test"])  # the breaker opened: not even tried
    assert len(a.calls) == 1
    assert second.reply.code == 451 and "circuit breakers open" in second.reply.text
    now[0] += 61  # after the cooldown one attempt goes through again
    (third,) = route(router, ["x@dest.test"])
    assert third.outcome is Outcome.SENT and len(a.calls) == 2


def test_weights_share_one_priority(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}])
    a, b = Scripted("a"), Scripted("b")
    router = Router(s, {"a": a, "b": b}, rng=random.Random(7))
    for _ in range(400):
        route(router, ["x@dest.test"])
    assert 0.65 < len(a.calls) / 400 < 0.85  # about 3 in 4


def test_a_pinned_provider_is_the_only_one_and_a_missing_one_defers(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "priority": 10}, {"name": "b", "priority": 20}])
    a = Scripted("a", (Outcome.TEMPORARY, LATER, "data"))
    b = Scripted("b")
    (r,) = route(Router(s, {"a": a, "b": b}), ["x@dest.test"], provider="a")
    assert r.outcome is Outcome.TEMPORARY and b.calls == []  # no failover when pinned
    (gone,) = route(Router(s, {"a": a, "b": b}), ["x@dest.test"], provider="old")
    assert (gone.reply.code, gone.reply.enhanced) == (451, "4.3.5")


def test_routes_pick_providers_by_recipient_domain(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        [{"name": "a"}, {"name": "b"}],
        routes=[{"recipient_domains": ["*.corp.test"], "providers": ["b"]}],
    )
    router = Router(s, {"a": Scripted("a"), "b": Scripted("b")})
    assert router.route_for("x@mail.corp.test", "a@example.com") == 0
    assert router.route_for("x@other.test", "a@example.com") is None
    results = asyncio.run(router.deliver(0, "a@example.com", ["x@mail.corp.test"], b"x")).results
    assert results[0].provider == "b"

"""The router as a pure decision over scripted transports: order, failover, what ends a
recipient, breakers and pinned providers (no sockets; injected transports and clock)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailgate.config import load_settings
from mailgate.models import SKIPPED, AttemptResult, Outcome, SmtpReply
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
        if p.setdefault("kind", "smtp") == "smtp":
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
    # ...and says what opened it: an expired message's DSN showed only the line above.
    assert f"; last error a: connect: {LATER.line()}" in second.reply.text
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


def test_weights_over_ten_thousand_picks(tmp_path: Path) -> None:
    """Each provider comes first in proportion to its weight; weight 0 never comes first
    while another has weight, but is still there to fail over to."""
    s = settings(
        tmp_path,
        [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}, {"name": "z", "weight": 0}],
    )
    router = Router(s, {n: Scripted(n) for n in "abz"}, rng=random.Random(11))
    firsts = {"a": 0, "b": 0, "z": 0}
    for _ in range(10_000):
        order = [p.settings.name for p in router._candidates(None)]
        assert sorted(order) == ["a", "b", "z"] and order[-1] == "z"
        firsts[order[0]] += 1
    assert firsts["z"] == 0
    assert 0.735 < firsts["a"] / 10_000 < 0.765  # 3 in 4 (sd about 0.0043)


def test_failover_goes_through_every_priority_in_order(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        [
            {"name": "c", "priority": 30},
            {"name": "a", "priority": 10},
            {"name": "b", "priority": 20},
        ],
    )
    order: list[str] = []
    fakes = {n: Scripted(n, (Outcome.TEMPORARY, LATER, "connect")) for n in "abc"}
    for fake in fakes.values():
        original = fake.deliver

        async def noted(*args: Any, _f: Any = original, _n: str = fake.name, **kw: Any) -> Any:
            order.append(_n)
            return await _f(*args, **kw)

        fake.deliver = noted  # type: ignore[method-assign]
    routed = asyncio.run(Router(s, fakes).deliver(None, "a@example.com", ["x@dest.test"], b"x"))
    assert order == ["a", "b", "c"]
    (r,) = routed.results
    assert r.outcome is Outcome.TEMPORARY and r.provider == "c"
    assert [h.provider for h in routed.history[0]] == ["a", "b"]


def test_breaker_gate_and_tls_policy_reach_the_transport(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        [{"name": "a", "priority": 10}, {"name": "m", "kind": "mx", "priority": 20}],
        routes=[
            {"recipient_domains": ["*.corp.test"], "providers": ["m"], "tls_policy": "require"}
        ],
    )
    a, m = Scripted("a"), Scripted("m")
    m.direct = True  # type: ignore[misc]
    router = Router(s, {"a": a, "m": m})
    route(router, ["x@dest.test"])
    asyncio.run(router.deliver(0, "a@example.com", ["x@mail.corp.test"], b"x"))
    gate = a.options[0]["gate"]
    assert gate is not None and gate() is True and a.options[0]["tls_policy"] is None
    assert m.options == [{"gate": None, "tls_policy": "require"}]  # an MX has no breaker
    assert router.is_direct("m") and not router.is_direct("a") and not router.is_direct("gone")


class Gated(Scripted):
    """Behaves like SmtpTransport's wait for a connection slot: ``during_wait`` runs, then
    the gate is asked; a closed gate skips every recipient."""

    def __init__(self, name: str, during_wait: Callable[[], None]) -> None:
        super().__init__(name)
        self.during_wait = during_wait

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        self.during_wait()
        if gate is not None and not gate():
            return [AttemptResult(Outcome.TEMPORARY, LATER, self.name, SKIPPED) for _ in recipients]
        return await super().deliver(sender, recipients, data)


def test_a_breaker_that_opens_while_waiting_skips_without_counting_a_failure(
    tmp_path: Path,
) -> None:
    s = settings(
        tmp_path,
        [{"name": "a", "priority": 10, "breaker_failures": 1}, {"name": "b", "priority": 20}],
    )
    b = Scripted("b")
    router = Router(s, {"b": b, "a": Scripted("a")})
    breaker = router.providers["a"].breaker
    assert breaker is not None
    # Another delivery's failure opens a's breaker while this one waits for a slot.
    a = Gated("a", lambda: breaker.record(False))
    router.providers["a"].transport = a
    routed = asyncio.run(router.deliver(None, "a@example.com", ["x@dest.test"], b"x"))
    assert routed.results[0].provider == "b" and routed.results[0].outcome is Outcome.SENT
    assert routed.history == [[]]  # the skip is no attempt
    assert a.calls == [] and b.calls == [["x@dest.test"]]


def test_half_open_lets_one_probe_through_and_its_success_closes(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        [
            {"name": "a", "priority": 10, "breaker_failures": 1, "breaker_cooldown": "30s"},
            {"name": "b", "priority": 20},
        ],
    )
    now = [100.0]
    a = Scripted("a", (Outcome.TEMPORARY, LATER, "connect"))
    b = Scripted("b")
    router = Router(s, {"a": a, "b": b}, clock=lambda: now[0])
    route(router, ["1@dest.test"])  # a fails: open, b delivers
    assert router.providers["a"].breaker.state == "open"  # type: ignore[union-attr]
    now[0] += 31
    release = asyncio.Event()
    original = a.deliver

    async def slow(*args: Any, **kw: Any) -> list[AttemptResult]:
        await release.wait()
        return await original(*args, **kw)

    a.deliver = slow  # type: ignore[method-assign]

    async def two_at_once() -> list[str]:
        probe = asyncio.create_task(router.deliver(None, "s@example.com", ["2@dest.test"], b"x"))
        await asyncio.sleep(0)  # the probe has taken the half-open slot and waits
        other = await router.deliver(None, "s@example.com", ["3@dest.test"], b"x")
        release.set()
        return [(await probe).results[0].provider, other.results[0].provider]

    assert asyncio.run(two_at_once()) == ["a", "b"]  # one probe; the other went to b
    assert router.providers["a"].breaker.state == "closed"  # type: ignore[union-attr]


def test_a_recipients_refusal_or_dns_answer_keeps_the_breaker_closed(tmp_path: Path) -> None:
    s = settings(tmp_path, [{"name": "a", "breaker_failures": 1}])
    gone = SmtpReply(550, "5.1.2", "no such domain")
    a = Scripted("a", (Outcome.PERMANENT, NO_USER, "rcpt"), (Outcome.TEMPORARY, gone, "dns"))
    router = Router(s, {"a": a})
    route(router, ["x@dest.test"])
    route(router, ["y@dest.test"])
    assert router.providers["a"].breaker.state == "closed"  # type: ignore[union-attr]

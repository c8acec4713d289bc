"""The failover SMTP scenarios: a dead provider at priority 10 in front of the sink, a
closed port (``failover``) or one that never answers (``failover-blackhole``); the
breaker must stop the attempts at it and delivery must go on at full speed."""

from __future__ import annotations

from bench.config import DEAD_TIMEOUT
from bench.smtp_delivering import delivering
from bench.smtp_load import Bench
from bench.smtp_results import Scenario, find, key_of
from bench.stats import verdict


async def failover(bench: Bench) -> Scenario:
    return await delivering(bench, "failover", dead="closed")


async def failover_blackhole(bench: Bench) -> Scenario:
    return await delivering(bench, "failover-blackhole", dead="blackhole")


def print_targets(scenarios: list[Scenario]) -> None:
    """Each failover run, its rate against plain e2e of the run."""
    e2e = find(scenarios, "e2e")
    for key in ("failover", "failover-blackhole"):
        sc = find(scenarios, key)
        if sc:
            _print_failover_targets(sc, e2e)


def _print_failover_targets(sc: Scenario, e2e: Scenario | None) -> None:
    """The breaker must stop attempts at the dead provider (a handful of failover events),
    and delivery must then go on through the other at full speed: with the default 2 s
    warm-up the window starts after the breaker opened, so its delivered rate is compared
    with plain e2e in the same run (or with e2e's 700 msg/s target when e2e did not run).
    A timeout wait per message would hold it at a few messages/s.

    250->delivered is printed too, but it is no verdict here: the backlog built while the
    first attempts waited for their timeouts is not worked off while the closed-loop load
    keeps the relay saturated (accepts go first), so it stays for the whole window."""
    x = sc.extra
    label = f"{key_of(sc)}:"
    print(
        f"  {label:<20} breaker stops the dead provider (< 100 failover events): "
        f"{verdict(x['failovers'] < 100)} ({x['failovers']})"
    )
    rate = x["delivered_rate"]
    hole = key_of(sc) == "failover-blackhole"
    backlog = f", the backlog of the first {DEAD_TIMEOUT} of timeouts" if hole else ""
    if e2e is not None and e2e.load:
        base = e2e.extra["delivered_rate"]
        ok, against = rate >= 0.8 * base, f"{rate / base:.2f}x e2e's {base:.0f} msg/s"
        want = ">= 0.8x e2e"
    else:
        ok, against, want = rate >= 700, "e2e did not run", ">= 700 msg/s"
    print(
        f"  {label:<20} delivered at full speed after the breaker ({want}): "
        f"{verdict(ok)} ({rate:.0f} msg/s, {against}; 250->delivered p99 "
        f"{x['d_p99']:.0f} ms{backlog})"
    )

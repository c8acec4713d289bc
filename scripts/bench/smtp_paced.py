"""The paced SMTP scenarios: the held, delivering, signing and webhook set-ups under an
open-loop load of ``--rate`` messages/s, so that delivery work getting in the way of
accepts shows as accept latency against the held run of the same round; their targets."""

from __future__ import annotations

import statistics

from bench.smtp_closed_loop import held
from bench.smtp_delivering import delivering
from bench.smtp_load import Bench
from bench.smtp_results import Scenario, find, key_of
from bench.stats import verdict
from bench.webhooks import print_webhook_targets


async def paced_held(bench: Bench) -> Scenario:
    return await held(bench, "paced-held", rate=bench.opts.rate)


async def paced_e2e(bench: Bench) -> Scenario:
    return await delivering(bench, "paced-e2e", rate=bench.opts.rate)


async def paced_dkim(bench: Bench) -> Scenario:
    key = await bench.dkim_key()
    return await delivering(bench, "paced-dkim", dkim=key, rate=bench.opts.rate)


async def paced_webhooks(bench: Bench) -> Scenario:
    return await delivering(bench, "paced-webhooks", rate=bench.opts.rate, webhooks="live")


async def paced_webhooks_dead(bench: Bench) -> Scenario:
    return await delivering(bench, "paced-webhooks-dead", rate=bench.opts.rate, webhooks="dead")


def print_targets(scenarios: list[Scenario]) -> None:
    """Accept p99 with delivery (signing or not) running against held, same rate."""
    paced_held, paced_dkim = find(scenarios, "paced-held"), find(scenarios, "paced-dkim")
    paced_e2e = find(scenarios, "paced-e2e")
    if paced_e2e and paced_e2e.load and paced_held and paced_held.load:
        _print_paced_ratio("delivery", paced_e2e, paced_held)
    if paced_dkim and paced_dkim.load:
        _print_paced_targets(paced_dkim, paced_held)
    for key, what in (("paced-e2e", "delivery"), ("paced-dkim", "DKIM delivery")):
        _print_paced_rounds(scenarios, key, what)


def print_webhooks_targets(scenarios: list[Scenario]) -> None:
    """Each paced-webhooks* run against paced-e2e of the same round."""
    for sc in scenarios:
        if key_of(sc).startswith("paced-webhooks") and not sc.failed and sc.load:
            base = next(
                (b for b in scenarios if key_of(b) == "paced-e2e" and b.round == sc.round), None
            )
            print_webhook_targets(sc, base, verdict)


def _print_paced_targets(dkim: Scenario, held: Scenario | None) -> None:
    """At the same offered rate: accept p99 with DKIM delivery running against delivery
    held, and delivery keeping up (sustained, drained, every message signed)."""
    assert dkim.load is not None
    x, rate = dkim.extra, dkim.load.rate or 0.0
    keeps_up = (x["drained"] and x["delivered_rate"] >= 0.97 * rate and dkim.load.late == 0) and x[
        "signed"
    ] == x["sink_total"] > 0
    print(
        f"  paced {rate:g} msg/s: DKIM delivery keeps up:   {verdict(keeps_up)} "
        f"({x['delivered_rate']:.0f} msg/s delivered, "
        f"{'drained' if x['drained'] else 'not drained'}, {x['signed']}/{x['sink_total']} "
        f"signed, {dkim.load.late} late starts)"
    )
    if held and held.load:
        _print_paced_ratio("DKIM delivery", dkim, held)


def _print_paced_ratio(what: str, running: Scenario, held: Scenario) -> None:
    """p99 accept latency with ``what`` running against delivery held, same offered rate."""
    assert running.load is not None and held.load is not None
    rate = running.load.rate or 0.0
    p99, base = running.load.percentile_ms(99), held.load.percentile_ms(99)
    print(
        f"  paced {rate:g} msg/s: p99 accept, {what} <= 2x held: "
        f"{verdict(p99 <= 2 * base)} ({p99:.2f} ms vs {base:.2f} ms held, {p99 / base:.2f}x)"
    )


def _print_paced_rounds(scenarios: list[Scenario], key: str, what: str) -> None:
    """With --rounds: each round's p99 ratio against the held run of the same round, and
    their median as the verdict (the held baseline itself moves a lot on a shared VM)."""
    ratios = []
    for sc in scenarios:
        held = next(
            (h for h in scenarios if key_of(h) == "paced-held" and h.round == sc.round and h.load),
            None,
        )
        if key_of(sc) == key and sc.load and held is not None and held.load is not None:
            ratios.append(sc.load.percentile_ms(99) / held.load.percentile_ms(99))
    if len(ratios) < 2:
        return
    median = statistics.median(ratios)
    shown = ", ".join(f"{r:.2f}x" for r in ratios)
    print(
        f"  paced, {len(ratios)} rounds: median p99 accept, {what} vs held <= 2x: "
        f"{verdict(median <= 2)} ({median:.2f}x; rounds {shown})"
    )

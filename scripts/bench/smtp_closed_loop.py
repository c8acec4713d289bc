"""The closed-loop SMTP scenarios, as many messages as the server takes: ``ceiling`` (a
bare aiosmtpd sink), ``held`` (mailgate, delivery disabled: the durable accept path
alone), ``e2e`` and ``e2e-dkim`` (delivering, unsigned and signed); and their targets."""

from __future__ import annotations

import asyncio

from bench import HOST
from bench.probes import lag_stats, pending
from bench.processes import RssSampler
from bench.smtp_delivering import delivering
from bench.smtp_load import Bench
from bench.smtp_results import TITLES, Scenario, find
from bench.stats import verdict


async def ceiling(bench: Bench) -> Scenario:
    sc = Scenario(TITLES["ceiling"])
    sink = await bench.start_sink()
    bench._log(f"ceiling: bare aiosmtpd on {HOST}:{sink.port} ({sink.loop}); loading")
    try:
        async with RssSampler(sink.proc.pid) as rss:
            sc.load, _ = await bench.run_load(sink.port)
        sc.peak_rss = rss.peak
        sc.extra["server_loop"] = sink.loop
    finally:
        await bench.stop_sink(sink)
    return sc


async def held(bench: Bench, key: str = "held", rate: float | None = None) -> Scenario:
    sc = Scenario(TITLES[key])
    mg = await bench.start_mailgate(None)
    bench._log(f"{key}: mailgate on {HOST}:{mg.port} (delivery disabled); loading")
    try:
        async with RssSampler(mg.proc.pid) as rss:
            sc.load, edges = await bench.run_load(mg.port, rate=rate, lag_port=mg.http_port)
        sc.extra.update(lag_stats(edges["start"]["lag"], edges["end"]["lag"]))
        sc.peak_rss = rss.peak
        sc.extra["queued"] = await asyncio.to_thread(pending, mg.db)
    finally:
        sc.extra["exit"], sc.problems = await bench.finish_mailgate(mg)
    return sc


async def e2e(bench: Bench) -> Scenario:
    return await delivering(bench, "e2e")


async def e2e_dkim(bench: Bench) -> Scenario:
    key = await bench.dkim_key()
    return await delivering(bench, "e2e-dkim", dkim=key)


def print_targets(scenarios: list[Scenario]) -> None:
    """Held against the ceiling, e2e's delivered rate, and what signing costs."""
    ceiling, held = find(scenarios, "ceiling"), find(scenarios, "held")
    e2e, dkim = find(scenarios, "e2e"), find(scenarios, "e2e-dkim")
    if ceiling and held and ceiling.load and held.load:
        top = ceiling.load.accept_rate
        ratio = held.load.accept_rate / top if top else 0.0
        print(f"  held accept >= 0.5x ceiling:          {verdict(ratio >= 0.5)} ({ratio:.2f}x)")
    if e2e and e2e.load:
        rate, drained = e2e.extra["delivered_rate"], e2e.extra["drained"]
        ok = rate >= 700 and drained
        print(
            f"  e2e >= 700 msg/s, queue drains:       {verdict(ok)} "
            f"({rate:.0f} msg/s, {'drained' if drained else 'not drained'})"
        )
    if dkim and dkim.load:
        _print_dkim_targets(dkim, e2e, held)


def _print_dkim_targets(dkim: Scenario, e2e: Scenario | None, held: Scenario | None) -> None:
    x = dkim.extra
    rate, drained = x["delivered_rate"], x["drained"]
    all_signed = x["signed"] == x["sink_total"] > 0 and x["dkim_verified"]
    ok = rate >= 500 and drained and all_signed
    print(
        f"  e2e with DKIM >= 500 msg/s:           {verdict(ok)} "
        f"({rate:.0f} msg/s, {'drained' if drained else 'not drained'}, "
        f"{x['signed']}/{x['sink_total']} signed"
        f"{', sample verifies' if x['dkim_verified'] else ', sample does NOT verify'})"
    )
    if held and held.load and dkim.load:
        p99, limit = dkim.load.percentile_ms(99), 2 * held.load.percentile_ms(99)
        print(
            f"  closed loop (saturated) p99 accept, DKIM delivery <= 2x held: "
            f"{verdict(p99 <= limit)} ({p99:.2f} ms vs {limit / 2:.2f} ms held)"
        )
    if e2e:
        plain = e2e.extra["delivered_rate"]
        ratio = rate / plain if plain else float("nan")
        print(f"  DKIM cost: delivered msg/s with/without signing = {ratio:.2f}x")

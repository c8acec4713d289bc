"""The SMTP bench's report: the header (machine, load), one table row per scenario (two
for delivering ones: accepted and delivered), the details of each, and the targets of
every scenario family, in that order."""

from __future__ import annotations

import argparse
from collections import Counter

from bench import smtp_closed_loop, smtp_failover, smtp_fill, smtp_paced
from bench.control import LATE_START
from bench.memory import print_memory
from bench.message import MessageFactory
from bench.report import print_machine, print_relay_end, print_table_head
from bench.smtp_delivering import DRAIN_TIMEOUT, print_delivery_details
from bench.smtp_fill import mb
from bench.smtp_results import DELIVERED_TITLES, Scenario, find, key_of, shown
from bench.webhooks import print_webhook_details


def _fmt_errors(errors: Counter[str]) -> str:
    if not errors:
        return "0"
    return f"{sum(errors.values())}"


def print_header(opts: argparse.Namespace) -> None:
    size = MessageFactory(opts.size).size
    print_machine("mailgate SMTP benchmark", "clients, sink")
    print(f"  message       {size} bytes (+ envelope), 1 recipient, no pipelining")
    print(
        f"  load          {opts.sessions} sessions in {opts.client_procs} client process(es), "
        f"warm-up {opts.warmup:g} s, window {opts.duration:g} s"
    )
    if any(s.startswith("paced") for s in opts.scenarios):
        print(f"  paced         {opts.rate:g} msg/s offered, open loop (paced-* scenarios)")


def print_table(scenarios: list[Scenario]) -> None:
    ceiling = find(scenarios, "ceiling")
    head = (
        f"{'scenario':<32} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'peak RSS MB':>12} {'vs ceiling':>11}"
    )
    print_table_head(head)
    for sc in scenarios:
        if sc.failed:
            print(f"{shown(sc):<32} FAILED (see below)")
            continue
        if "amplification" in sc.extra:
            amp = f"{sc.extra['amplification']:.2f}x in flight"
            print(
                f"{shown(sc):<32} {'-':>9} {'-':>8} {'-':>8} {'-':>7} {mb(sc.peak_rss):>12} {amp}"
            )
            continue
        assert sc.load is not None
        ratio = "-"
        if ceiling is not None and sc is not ceiling and ceiling.load and ceiling.load.accept_rate:
            ratio = f"{sc.load.accept_rate / ceiling.load.accept_rate:.2f}x"
        print(
            f"{shown(sc):<32} {sc.load.accept_rate:>9.0f} {sc.load.percentile_ms(50):>8.2f} "
            f"{sc.load.percentile_ms(99):>8.2f} {_fmt_errors(sc.load.errors):>7} "
            f"{mb(sc.peak_rss):>12} {ratio:>11}"
        )
        key = key_of(sc)
        if key in DELIVERED_TITLES:
            x = sc.extra
            title = DELIVERED_TITLES[key] + (f" #{sc.round}" if sc.round > 1 else "")
            print(
                f"{title:<32} {x['delivered_rate']:>9.0f} "
                f"{x['d_p50']:>8.2f} {x['d_p99']:>8.2f} {'':>7} {'':>12} {'':>11}"
            )
    if any(key_of(sc) in DELIVERED_TITLES and not sc.failed for sc in scenarios):
        print("(delivered rows: msg/s reaching the sink; p50/p99 are 250->delivered latency)")


def print_details(scenarios: list[Scenario], opts: argparse.Namespace) -> None:
    for sc in scenarios:
        print()
        print(f"{shown(sc)}:")
        if sc.failed:
            print("  FAILED: " + sc.failed.replace("\n", "\n    "))
            continue
        if "amplification" in sc.extra:
            print_memory(sc.extra)
            continue
        assert sc.load is not None
        load = sc.load
        warmup = f" (total incl. warm-up {load.accepted_total})" if load.timed else ""
        print(
            f"  accepted {load.accepted} in {load.window:.1f} s{warmup}; "
            f"sessions connected {load.connected}/{load.sessions}; "
            f"{len(load.latencies_us)} latency samples"
        )
        if load.rate is not None:
            late = load.late
            print(
                f"  open loop: offered {load.rate:g} msg/s, accepted {load.accept_rate:.0f} "
                f"msg/s; {late} message(s) started > {LATE_START * 1000:.0f} ms behind "
                f"schedule{' (all sessions busy: offered rate NOT met)' if late else ''}"
            )
        for kind, n in sorted(load.errors.items()):
            print(f"  error: {kind} x{n}")
        x = sc.extra
        if "server_loop" in x:
            print(f"  server loop: {x['server_loop']}; client loop: {load.loop}")
        if "pending_end" in x:
            growth = x["backlog_rate"]
            growing = x["pending_end"] - x["pending_start"] > max(200, 0.02 * load.accepted)
            print(
                f"  delivered in window {x['delivered']} = {x['delivered_rate']:.0f} msg/s "
                f"(sustained end to end)"
            )
            print(
                f"  backlog: {x['pending_start']} at window start -> {x['pending_end']} at end "
                f"({growth:+.0f} msg/s): {'GROWING' if growing else 'not growing'}"
            )
            drained = "drained" if x["drained"] else f"NOT drained ({x['pending_after']} left)"
            print(
                f"  after load: {x['pending_at_stop']} pending, {drained} in "
                f"{x['drain_seconds']:.1f} s (limit {DRAIN_TIMEOUT:.0f} s); "
                f"sink received {x['sink_total']} in all; statuses {x['statuses']}"
            )
        if x.get("lag_samples") == 0:
            print("  mailgate event loop lag: not reported (no lag histogram on /metrics)")
        elif "lag_samples" in x:
            print(
                f"  mailgate event loop lag in the window ({x['lag_samples']} samples, every "
                f"20 ms): p50 <= {x['lag_p50'] * 1000:g} ms, p99 <= {x['lag_p99'] * 1000:g} ms, "
                f"worst <= {x['lag_max'] * 1000:g} ms; {x['lag_over_10ms']} over 10 ms"
            )
        if "d_count" in x:
            print_delivery_details(x)
        if "wh_dead" in x:
            print_webhook_details(x)
        if "rss_after" in x:
            smtp_fill.print_details(x, load, sc.peak_rss, opts)
        elif "queued" in x:
            print(f"  queued (pending in db) at end: {x['queued']}")
        print_relay_end(x, sc.problems)


def print_targets(scenarios: list[Scenario]) -> None:
    held, ceiling = find(scenarios, "held"), find(scenarios, "ceiling")
    others = ("e2e", "fill", "e2e-dkim", "failover", "failover-blackhole", "paced-dkim")
    print()
    print("targets:")
    if not (held and ceiling) and not any(find(scenarios, k) for k in others):
        print("  (no target applies to the scenarios run)")
    smtp_closed_loop.print_targets(scenarios)
    smtp_paced.print_targets(scenarios)
    smtp_failover.print_targets(scenarios)
    smtp_paced.print_webhooks_targets(scenarios)
    smtp_fill.print_targets(scenarios)

"""The delivering SMTP scenarios' common run (e2e, e2e-dkim, paced-e2e, paced-dkim,
failover, failover-blackhole, paced-webhooks*): mailgate delivering to a tracking sink,
maybe signing, behind a dead provider or sending webhooks; accept, delivered rate,
backlog, drain and 250->delivered per message; and the lines that report them."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from bench import HOST
from bench.config import DEAD_TIMEOUT, DeadProvider, closed_port
from bench.dkim_keys import DkimKeyFile, verify_sample
from bench.orchestrator import Probe, Sink
from bench.probes import failover_events, lag_stats, pending, statuses
from bench.processes import RssSampler
from bench.smtp_load import Bench, Mailgate
from bench.smtp_results import TITLES, Scenario
from bench.stats import delivery_latency, window_rates
from bench.webhooks import WebhookSink, webhook_stats

DRAIN_TIMEOUT = 60.0


def e2e_probe(mg: Mailgate, sink: Sink) -> Probe:
    """Backlog and sink count, read at the window's edges."""

    async def probe() -> dict[str, Any]:
        return {
            "pending": await asyncio.to_thread(pending, mg.db),
            "delivered": await sink.count(),
        }

    return probe


async def delivering(
    bench: Bench,
    key: str,
    *,
    dkim: DkimKeyFile | None = None,
    dead: str | None = None,
    rate: float | None = None,
    webhooks: str | None = None,
) -> Scenario:
    """Load mailgate delivering to a tracking sink (optionally signing, behind a dead
    provider, or sending webhooks: "live" or "dead"); measure accept, delivered rate,
    backlog and 250->delivered per message."""
    sc = Scenario(TITLES[key])
    sink = await bench.start_sink(track=True, blackhole=dead == "blackhole")
    mg: Mailgate | None = None
    hooks = await WebhookSink(dead=webhooks == "dead").start() if webhooks else None
    try:
        provider = None
        if dead == "closed":
            provider = DeadProvider(closed_port())
        elif dead == "blackhole":
            provider = DeadProvider(sink.blackhole_port, DEAD_TIMEOUT)
        mg = await bench.start_mailgate(
            sink.port,
            dkim_key=dkim.path if dkim else None,
            dead=provider,
            webhook_url=hooks.url if hooks else None,
        )
        via = f" (dead provider on port {provider.port} first)" if provider else ""
        bench._log(
            f"{key}: mailgate on {HOST}:{mg.port} -> sink on {HOST}:{sink.port}{via}; loading"
        )
        async with RssSampler(mg.proc.pid) as rss:
            sc.load, edges = await bench.run_load(
                mg.port,
                probe=e2e_probe(mg, sink),
                track=True,
                rate=rate,
                lag_port=mg.http_port,
            )
            bench._log(f"{key}: load done; waiting for the queue to drain")
            sc.extra.update(await drain(mg, sink))
            if hooks is not None:
                expected = 0 if hooks.dead else 2 * sc.load.accepted_total
                waited = await hooks.wait_for(expected, DRAIN_TIMEOUT)
                start = sc.load.go + bench.opts.warmup
                end = start + sc.load.window
                sc.extra.update(webhook_stats(hooks, expected, start, end, waited))
        sc.peak_rss = rss.peak
        sc.extra.update(window_rates(sc.load, edges))
        sc.extra.update(lag_stats(edges["start"]["lag"], edges["end"]["lag"]))
        got = await sink.stats()
        sc.extra.update(delivery_latency(sc.load.acks, got["arrivals"]))
        sc.extra.update(
            duplicates=got["duplicates"],
            without_id=got["without_id"],
            signed=got["signed"],
            signatures=got["signatures"],
        )
        if dkim is not None:
            sc.extra["dkim_verified"] = verify_sample(base64.b64decode(got["sample"]), dkim)
        if provider is not None:
            sc.extra.update(await asyncio.to_thread(failover_events, mg.db, sc.load.go))
            sc.extra["blackhole_connections"] = got["blackhole_connections"]
    finally:
        if mg is not None:
            sc.extra["exit"], sc.problems = await bench.finish_mailgate(mg)
        await bench.stop_sink(sink)
        if hooks is not None:
            await hooks.close()
    return sc


async def drain(mg: Mailgate, sink: Sink) -> dict[str, Any]:
    """Poll the backlog until 0 or DRAIN_TIMEOUT; how long it took, and what is left."""
    t0 = time.monotonic()
    left = await asyncio.to_thread(pending, mg.db)
    at_stop = left
    while left and time.monotonic() - t0 < DRAIN_TIMEOUT:
        await asyncio.sleep(0.1)
        left = await asyncio.to_thread(pending, mg.db)
    return {
        "pending_at_stop": at_stop,
        "drained": left == 0,
        "drain_seconds": time.monotonic() - t0,
        "pending_after": left,
        "sink_total": await sink.count(),
        "statuses": await asyncio.to_thread(statuses, mg.db),
    }


def print_delivery_details(x: dict[str, Any]) -> None:
    """250->delivered, what the sink saw, and (failover) what the dead provider cost."""
    print(
        f"  250->delivered over {x['d_count']} messages accepted in the window: "
        f"p50 {x['d_p50']:.1f} ms, p99 {x['d_p99']:.1f} ms, max {x['d_max']:.1f} ms"
        + (f"; {x['d_missing']} never reached the sink" if x["d_missing"] else "")
    )
    if x["duplicates"] or x["without_id"]:
        print(
            f"  sink: {x['duplicates']} duplicate deliveries, "
            f"{x['without_id']} messages without a mailgate Received id"
        )
    if "dkim_verified" in x:
        print(
            f"  DKIM: {x['signed']} of {x['sink_total']} received messages signed, "
            f"{x['signatures']} DKIM-Signature headers; a sample "
            f"{'verifies' if x['dkim_verified'] else 'does NOT verify'} with dkimpy"
        )
    elif x["signed"]:
        print(f"  DKIM: {x['signed']} received messages signed (none expected)")
    if "failovers" in x:
        when = ""
        if x["failovers"]:
            when = (
                f" (first {x['failover_first']:+.1f} s, last {x['failover_last']:+.1f} s "
                "from load start)"
            )
        hole = x["blackhole_connections"]
        print(
            f"  failover events in the queue: {x['failovers']}{when}"
            + (f"; blackhole accepted {hole} connection(s)" if hole else "")
        )

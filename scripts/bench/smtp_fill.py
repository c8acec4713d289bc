"""The ``fill`` SMTP scenario: ``--queue-fill`` messages pushed into a held mailgate as
fast as it takes them, then its RSS: the queue lives on disk, not in memory."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench import HOST
from bench.probes import pending
from bench.processes import RssSampler
from bench.smtp_load import Bench
from bench.smtp_results import TITLES, LoadResult, Scenario, find
from bench.stats import verdict


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


async def fill(bench: Bench) -> Scenario:
    n = bench.opts.queue_fill
    sc = Scenario(TITLES["fill"])
    mg = await bench.start_mailgate(None)
    bench._log(f"fill: pushing {n} messages into mailgate on {HOST}:{mg.port}")
    try:
        async with RssSampler(mg.proc.pid) as rss:
            sc.load, _ = await bench.run_load(mg.port, quota=n)
            await asyncio.sleep(1.0)  # let the last commits and buffers settle
            rss_after = rss.sample()
        sc.peak_rss = rss.peak
        db_bytes = sum(p.stat().st_size for p in mg.db.parent.glob("mailgate.db*") if p.is_file())
        sc.extra.update(
            rss_after=rss_after,
            queued=await asyncio.to_thread(pending, mg.db),
            db_bytes=db_bytes,
        )
    finally:
        sc.extra["exit"], sc.problems = await bench.finish_mailgate(mg)
    return sc


def print_details(
    x: dict[str, Any], load: LoadResult, peak_rss: int, opts: argparse.Namespace
) -> None:
    print(
        f"  queued {x['queued']} (asked {opts.queue_fill}) in {load.window:.1f} s "
        f"= {load.accepted_total / load.window:.0f} msg/s; RSS after fill "
        f"{mb(x['rss_after'])} MB (peak {mb(peak_rss)} MB); "
        f"database {x['db_bytes'] / 1e6:.0f} MB on disk"
    )


def print_targets(scenarios: list[Scenario]) -> None:
    fill = find(scenarios, "fill")
    if fill and fill.load:
        rss = fill.extra["rss_after"]
        print(
            f"  RSS < 150 MB with queue filled:       {verdict(rss < 150e6)} "
            f"({mb(rss)} MB with {fill.extra['queued']} queued)"
        )

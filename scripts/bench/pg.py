"""Scale-out on PostgreSQL: one node on SQLite, one on PostgreSQL, three on PostgreSQL.

Scenarios (``--only`` picks some; ``--rounds N`` runs them N times in turn, so each ratio
compares runs made minutes apart on the same machine):

* ``sqlite-1``, ``pg-1`` and ``pg-3``: bench-smtp's ``e2e`` (closed loop, the same
  ``--sessions`` and message size, its load client and tracking sink) against one
  ``mailgate serve`` on SQLite, one on PostgreSQL, and three on one PostgreSQL database
  (node ids n1..n3, the client processes spread over their ports, every node delivering
  to the one sink). Printed: messages/s accepted and delivered in the window, accept
  p50/p99 and 250->delivered p50/p99, duplicates at the sink, and the ratios
  pg-1/sqlite-1 and pg-3/pg-1.
* ``claim``: claim latency with ``--claim-depths`` (10,000 and 1,000,000) queued
  deliveries on both engines (claim.py).

``--pg-url`` names a database this bench EMPTIES (its public schema is dropped) before each
PostgreSQL run. Everything else stays in a temp dir and on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import claim, use_checkout
from bench.config import free_port, relay_toml, toml_str
from bench.orchestrator import Sink, log_problems, run_in_tempdir
from bench.postgres import pg_fetch, reset_pg
from bench.probes import pending as sqlite_pending
from bench.probes import statuses
from bench.smtp_load import Bench, Mailgate
from bench.smtp_results import LoadResult, Scenario
from bench.stats import delivery_latency, nearest_rank, window_rates

use_checkout(children=True)  # mailgate serve and its writer process: this checkout's

SCENARIOS = ("sqlite-1", "pg-1", "pg-3", "claim")
NODES = {"sqlite-1": ("sqlite", 1), "pg-1": ("pg", 1), "pg-3": ("pg", 3)}
DRAIN_TIMEOUT = 120.0
CLAIM_TARGET_MS = 10.0


class ScaleBench(Bench):
    """bench-smtp's orchestrator with N nodes per scenario and a PostgreSQL queue."""

    async def start_node(self, sink_port: int, pg_url: str | None, node: int) -> Mailgate:
        workdir = self.relay_dir()
        toml = relay_toml(workdir, sink_port, "info", 0, http_port=free_port())
        toml = toml.replace("[server]\n", f'[server]\nnode_id = "n{node}"\n', 1)
        if pg_url:
            toml += f"\n[database]\nurl = {toml_str(pg_url)}\n"
        config = workdir / "relay.toml"
        config.write_text(toml)
        log = workdir / "mailgate.log"
        proc = await self.spawn_serve(config, log)
        port = await self._wait_listening(proc, log)
        return Mailgate(proc, port, workdir / "data" / "mailgate.db", log)

    async def pending(self, nodes: list[Mailgate], pg: bool) -> int:
        if not pg:
            return await asyncio.to_thread(sqlite_pending, nodes[0].db)
        sql = "SELECT count(*) FROM deliveries WHERE next_attempt_at IS NOT NULL"
        return int((await pg_fetch(self.opts.pg_url, sql))[0][0])

    async def statuses(self, nodes: list[Mailgate], pg: bool) -> dict[str, int]:
        if not pg:
            return await asyncio.to_thread(statuses, nodes[0].db)
        sql = "SELECT status, count(*) FROM deliveries GROUP BY 1"
        rows = await pg_fetch(self.opts.pg_url, sql)
        return {str(s): int(n) for s, n in rows}

    async def load_nodes(self, ports: list[int], probe: Any) -> tuple[LoadResult, dict[str, Any]]:
        """bench-smtp's run_load, with the client processes spread over ``ports``."""
        opts = self.opts
        procs_n = max(opts.client_procs, len(ports))
        per = [opts.sessions // procs_n + (i < opts.sessions % procs_n) for i in range(procs_n)]
        run = await self.run_clients(
            [self.client_argv(ports[i % len(ports)], n, True) for i, n in enumerate(per)],
            "load client",
            lead=opts.warmup,
            length=opts.duration,
            go=lambda i: {"quota": None},
            probe=probe,
        )
        return self._merge(run, None), run.edges

    async def scale(self, key: str) -> Scenario:
        engine, count = NODES[key]
        pg = engine == "pg"
        sc = Scenario(key)
        if pg:
            await reset_pg(self.opts.pg_url)
        sink: Sink = await self.start_sink(track=True)
        nodes: list[Mailgate] = []
        try:
            for i in range(1, count + 1):  # one after another: the first makes the schema
                nodes.append(await self.start_node(sink.port, self.opts.pg_url if pg else None, i))
            self._log(f"{key}: {count} node(s) on {engine} -> sink :{sink.port}; loading")

            async def probe() -> dict[str, Any]:
                return {"pending": await self.pending(nodes, pg), "delivered": await sink.count()}

            sc.load, edges = await self.load_nodes([n.port for n in nodes], probe)
            t0 = time.monotonic()
            left = await self.pending(nodes, pg)
            while left and time.monotonic() - t0 < DRAIN_TIMEOUT:
                await asyncio.sleep(0.2)
                left = await self.pending(nodes, pg)
            sc.extra.update(window_rates(sc.load, edges))
            got = await sink.stats()
            sc.extra.update(delivery_latency(sc.load.acks, got["arrivals"]))
            sc.extra.update(
                duplicates=got["duplicates"],
                drained=left == 0,
                drain_seconds=time.monotonic() - t0,
                statuses=await self.statuses(nodes, pg),
            )
        finally:
            for node in nodes:
                await self.stop_mailgate(node)
                sc.problems += log_problems(node.log)
            await self.stop_sink(sink)
        return sc

    async def claim(self) -> list[dict[str, Any]]:
        rows = []
        for engine in ("sqlite", "pg"):
            for depth in self.opts.claim_depths:
                self._log(f"claim: {engine}, filling {depth:,} deliveries")
                rows.append(
                    await asyncio.to_thread(
                        claim.run,
                        engine,
                        self.opts.pg_url,
                        depth,
                        self.workdir,
                        self.opts.claims,
                        self.opts.claim_batch,
                    )
                )
        return rows

    async def run(self, scenarios: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for rnd in range(1, self.opts.rounds + 1):
            for key in scenarios:
                if key == "claim":
                    continue
                sc = await self.scale(key)
                sc.round = rnd
                out.append(sc)
        if "claim" in scenarios:
            out.append(await self.claim())
        return out


def print_scale(scenarios: list[Scenario]) -> None:
    print(
        f"\n{'scenario':<10}{'round':>6}{'acc/s':>9}{'dlv/s':>9}{'acc p50':>9}{'acc p99':>9}"
        f"{'e2e p50':>9}{'e2e p99':>9}{'dup':>5}  drained"
    )
    for sc in scenarios:
        x, load = sc.extra, sc.load
        assert load is not None
        print(
            f"{sc.name:<10}{sc.round:>6}{load.accept_rate:>9.0f}{x['delivered_rate']:>9.0f}"
            f"{load.percentile_ms(50):>9.1f}{load.percentile_ms(99):>9.1f}"
            f"{x['d_p50']:>9.1f}{x['d_p99']:>9.1f}{x['duplicates']:>5}  {x['drained']}"
            + (f"  errors={dict(load.errors)}" if load.errors else "")
            + (f"  problems={len(sc.problems)}" if sc.problems else "")
        )
    by: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        by.setdefault(sc.name, []).append(sc)

    def ratio(a: str, b: str, target: float) -> None:
        if a not in by or b not in by:
            return
        for what, get in (
            ("accepted", lambda s: s.load.accept_rate),
            ("delivered", lambda s: s.extra["delivered_rate"]),
        ):
            rs = sorted(get(x) / get(y) for x, y in zip(by[a], by[b], strict=False) if get(y))
            if rs:
                shown = ", ".join(f"{r:.2f}" for r in rs)
                med = nearest_rank(rs, 50)
                verdict = "PASS" if med >= target else "FAIL"
                print(f"{a}/{b} {what}: {shown} (median {med:.2f}; target {target}x: {verdict})")

    ratio("pg-1", "sqlite-1", 0.8)
    ratio("pg-3", "pg-1", 1.5)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-pg", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", required=True, help="a PostgreSQL database the bench EMPTIES")
    p.add_argument("--only", action="append", metavar="SCENARIO", help=", ".join(SCENARIOS))
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--client-procs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--claim-depths", default="10000,1000000", help="queued deliveries")
    p.add_argument("--claims", type=int, default=200, help="claims timed per depth")
    p.add_argument("--claim-batch", type=int, default=200, help="deliveries per claim")
    p.add_argument("--keep-tmp", action="store_true")
    opts = p.parse_args(argv)
    picked = [s for v in (opts.only or [",".join(SCENARIOS)]) for s in v.split(",") if s]
    unknown = set(picked) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}")
    opts.scenarios = [s for s in SCENARIOS if s in picked]
    opts.claim_depths = [int(x) for x in opts.claim_depths.split(",")]
    opts.log_level = "info"
    return opts


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    print(
        f"bench-pg: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f"; {opts.sessions} sessions, {opts.size} B, {opts.duration:g} s after {opts.warmup:g} s"
    )
    results = run_in_tempdir(
        lambda workdir: ScaleBench(opts, workdir),
        opts.scenarios,
        prefix="mailgate-bench-pg-",
        keep_tmp=opts.keep_tmp,
    )
    if isinstance(results, int):
        return results
    scale = [r for r in results if isinstance(r, Scenario)]
    if scale:
        print_scale(scale)
    for r in results:
        if isinstance(r, list):
            claim.print_claims(r, opts.claim_batch, CLAIM_TARGET_MS)
    for sc in scale:
        for line in sc.problems[:5]:
            print(f"  {sc.name} round {sc.round}: {line[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

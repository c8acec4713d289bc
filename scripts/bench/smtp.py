"""SMTP throughput benchmark: a bare aiosmtpd ceiling against mailgate, all on 127.0.0.1.

Scenarios (``--only`` picks some):

* ``ceiling``: a bare aiosmtpd server whose handle_DATA only answers 250. No relay written
  in Python on aiosmtpd can beat it, so mailgate's figures are read as a fraction of it.
* ``held``: ``mailgate serve`` with delivery disabled: the durable accept path alone
  (policy, headers, group commit to SQLite with fsync).
* ``e2e``: mailgate accepting and delivering through an smtp provider to a no-op sink;
  the sink counts what arrives, so the delivered rate and the backlog are measured too.
* ``e2e-dkim``: the same with an RSA-2048 DKIM key for example.com (the test messages'
  From: domain), so every message is signed; the sink counts the DKIM-Signature headers
  and one signature is verified with dkimpy. Run beside ``e2e``: the ratio of their
  delivered rates is what signing costs.
* ``paced-held``, ``paced-e2e`` and ``paced-dkim``: the same set-ups (delivery held;
  delivering; delivering with DKIM) under an open-loop load of ``--rate`` messages/s
  instead of as many as the server takes. The closed-loop scenarios saturate the
  machine, so their latency mostly says how the two cores are shared between relay, sink
  and clients; at a fixed offered rate that the relay delivers in full, any extra accept
  latency is delivery work getting in the way of accepts (a stalled event loop shows up
  in p99).
  ``--rounds N`` runs the chosen scenarios N times in turn; the paced verdict is then the
  median over rounds of p99 against the held run of the same round, since on a shared
  machine the held baseline moves from run to run as much as the ratio asked about.
* ``failover``: a "dead" provider at priority 10 (a closed loopback port, breaker after 5
  failures, 30 s cooldown) in front of the sink at priority 20; the number of ``failover``
  events in the queue shows how many deliveries still tried the dead one.
* ``failover-blackhole``: the dead provider accepts TCP connections and never answers
  (2 s timeouts): once its breaker is open, delivery must not wait for those timeouts.
* ``paced-webhooks`` and ``paced-webhooks-dead``: ``paced-e2e`` with a webhook endpoint
  for every event (two per message), live or never answering; see webhooks.py.
* ``memory`` and ``memory-http``: peak and settled RSS of all of mailgate's processes
  around 20 concurrent 20 MB SMTP messages / a 9 MB attachment over HTTP, and the
  amplification (peak growth / bytes in flight); see memory.py.
* ``fill``: push ``--queue-fill`` messages into a held mailgate and read its RSS, to show
  the queue lives on disk and not in memory.

For every delivering scenario the "250->delivered" latency is measured per message: the
client notes (queue id from "250 ... queued as <ID>", time.monotonic()) and the sink notes
(the id in the relay's "Received: ... id <ID>;", time.monotonic()); CLOCK_MONOTONIC is
system-wide on Linux, so the orchestrator can subtract one from the other.

Run as ``scripts/bench-smtp`` (``python -m bench.smtp`` with scripts/ on PYTHONPATH). The
sink and the load client are child processes (``python -m bench.sink`` and ``python -m
bench.smtp_client``, see there); the orchestrator starts them and reaps them on any exit.
Every run is bounded: fixed warm-up and measuring windows, a deadline for the queue fill,
timeouts on every reply and on drain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence

from bench import memory, smtp_closed_loop, smtp_failover, smtp_fill, smtp_paced
from bench.memory import add_arguments as add_memory_arguments
from bench.message import MessageFactory
from bench.orchestrator import run_and_report, select_scenarios
from bench.processes import BenchError
from bench.smtp_load import Bench
from bench.smtp_report import print_details, print_header, print_table, print_targets
from bench.smtp_results import SCENARIOS, TITLES, Scenario

Step = Callable[[Bench], Awaitable[Scenario]]
STEPS: dict[str, Step] = {
    "ceiling": smtp_closed_loop.ceiling,
    "held": smtp_closed_loop.held,
    "e2e": smtp_closed_loop.e2e,
    "e2e-dkim": smtp_closed_loop.e2e_dkim,
    "paced-held": smtp_paced.paced_held,
    "paced-e2e": smtp_paced.paced_e2e,
    "paced-dkim": smtp_paced.paced_dkim,
    "failover": smtp_failover.failover,
    "failover-blackhole": smtp_failover.failover_blackhole,
    "paced-webhooks": smtp_paced.paced_webhooks,
    "paced-webhooks-dead": smtp_paced.paced_webhooks_dead,
    "fill": smtp_fill.fill,
    "memory": memory.memory,
    "memory-http": memory.memory_http,
}


class SmtpBench(Bench):
    """The chosen scenarios, ``--rounds`` times in turn; a failed one is reported, the
    rest still run."""

    async def run(self, which: Sequence[str]) -> list[Scenario]:
        out = []
        rounds = self.opts.rounds
        for n in range(1, rounds + 1):
            for name in which:
                if rounds > 1:
                    self._log(f"round {n} of {rounds}: {name}")
                try:
                    sc = await STEPS[name](self)
                except BenchError as exc:
                    self._log(f"{name}: FAILED: {exc}")
                    sc = Scenario(TITLES[name], failed=str(exc))
                sc.round = n
                out.append(sc)
        return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench-smtp",
        description="SMTP throughput of mailgate against a bare aiosmtpd ceiling (127.0.0.1).",
    )
    p.add_argument("--sessions", type=int, default=50, help="concurrent SMTP sessions")
    p.add_argument("--duration", type=float, default=10.0, help="measuring window, s")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up before it, s")
    p.add_argument("--size", type=int, default=2048, help="message size, bytes")
    p.add_argument("--client-procs", type=int, default=2, help="load client processes")
    p.add_argument(
        "--rate", type=float, default=500.0, help="offered messages/s of the paced scenarios"
    )
    p.add_argument("--queue-fill", type=int, default=100_000, help="messages for 'fill'")
    p.add_argument("--skip-fill", action="store_true", help="leave out 'fill'")
    p.add_argument("--fill-timeout", type=float, default=600.0, help="give up a fill after, s")
    p.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help=f"run only these (repeatable or comma list): {','.join(SCENARIOS)}",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="mailgate's [server] log_level (info is its default)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the chosen scenarios this many times in turn (paced ratios: the median)",
    )
    p.add_argument(
        "--sink-chunking",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the delivering scenarios' sink offers CHUNKING (BDAT), as Postfix and Gmail do",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    add_memory_arguments(p)
    opts = p.parse_args(argv)
    opts.scenarios = select_scenarios(opts.only, SCENARIOS)
    if opts.skip_fill and "fill" in opts.scenarios:
        opts.scenarios.remove("fill")
    if opts.sessions < 1 or opts.client_procs < 1 or opts.queue_fill < 1 or opts.rounds < 1:
        p.error("--sessions, --client-procs, --queue-fill and --rounds must be >= 1")
    if opts.rate <= 0:
        p.error("--rate must be > 0")
    if opts.duration <= 0 or opts.warmup < 0 or opts.fill_timeout <= 0:
        p.error("--duration and --fill-timeout must be > 0, --warmup >= 0")
    if opts.size < MessageFactory.minimum_size():
        p.error(f"--size must be at least {MessageFactory.minimum_size()}")
    return opts


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    print_header(opts)

    def report(scenarios: list[Scenario]) -> None:
        print_table(scenarios)
        print_details(scenarios, opts)
        print_targets(scenarios)

    return run_and_report(
        lambda workdir: SmtpBench(opts, workdir), opts, report, prefix="mailgate-bench-"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

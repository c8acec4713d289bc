"""HTTP API throughput of mailgate: native send and batch, and the compat dialects' ones.

Scenarios (``--only`` picks some), each against a fresh ``mailgate serve`` (temp dir, SQLite,
SMTP off, HTTP on a kernel-chosen loopback port) delivering to the no-op SMTP sink
(bench.sink), with an API key made by ``mailgate keys create``:

* ``bare-send``: the reference: the ``send`` load against a bare Starlette + uvicorn app
  answering 202 to the same request (http_bare.py); ``send`` is compared with it.
* ``send``: ``--sessions`` keep-alive HTTP/1.1 connections, each posting a ~2 KB message
  (html + text, tags, metadata) and waiting for the answer, for ``--duration`` s after
  ``--warmup`` s. A 202 is an accepted message; anything else is an error (a sample body
  of each kind is printed).
* ``send-held``: ``send`` against a relay with delivery disabled: the accept path alone,
  as bench-smtp's held row measures SMTP's (the bare reference delivers nothing either).
* ``batch``: ``--batches`` sequential batch requests of 1000 ``recipient_variables`` each
  (subject, html and text templated with {{ name }} and {{ code }}); the latency of each
  request, and whether the answer says queued=1000.
* ``mailsage-send``: the ``send`` load against MailSage's ``POST /api/v1/emails/send``
  (the sender from ``[compat] default_from``); compared with ``send`` of the same run.
* ``messagepipe-send``: the ``send`` load against MessagePipe's ``POST /email/send`` with
  a template made first; each answer waits for the first delivery attempt (into the sink),
  so its latency is accept + delivery, and only a 201 "Email sent successfully" counts.
  Run with ``--pipe-sessions`` connections (50, as ``send``): every client waits for a
  delivery, so at saturation the closed loop measures the pipeline's throughput (each
  answer waits for the work queued before it); fewer show a send's own latency.
* ``analyze``: ``--analyze-sessions`` (1) keep-alive connections posting a ~9 KB newsletter-like
  message (html with links and images, text, tags) to ``POST /v1/messages/analyze?dns=false``
  (no DNS: the figure is the relay's own work); 200 is success. Target p99 <= 50 ms.
* ``mailsage-batch``: ``--batches`` MailSage ``POST /api/v1/emails/batch`` of 1000
  recipients each; the latency of each request and whether recipient_count=1000.
* ``tracking``: the tracking endpoints under the ``send`` load's connections: GETs of the
  open pixel (200) and of a click (302) in turn, with valid tokens of messages sent first
  with tracking on (see http_tracking.py); each records an event.

Why the load client is raw asyncio streams on uvloop in two processes rather than httpx: it
must not be the bottleneck on a small machine. It writes prebuilt request bytes and reads
only the status line, the headers and a Content-Length body (http_client.py, run as
``python -m bench.http_client``). The child processes and the control protocol (READY / GO
/ RESULT over pipes) are those of the SMTP bench (orchestrator.py, control.py).

Run as ``scripts/bench-http`` (``python -m bench.http`` with scripts/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench.http_load import SCENARIOS, Result
from bench.http_report import print_details, print_header, print_table, print_targets
from bench.http_requests import BATCH_SIZE
from bench.http_scenarios import HttpBench
from bench.http_tracking import TRACKING_TARGET_RATE
from bench.orchestrator import run_and_report, select_scenarios


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench-http",
        description=(
            "HTTP API throughput of mailgate: native send and batch, MailSage send and batch, "
            "MessagePipe send (127.0.0.1)."
        ),
    )
    p.add_argument("--sessions", type=int, default=50, help="concurrent keep-alive connections")
    p.add_argument(
        "--pipe-sessions",
        type=int,
        default=50,
        help="messagepipe-send: concurrent clients, each waiting for its delivery",
    )
    p.add_argument(
        "--analyze-sessions",
        type=int,
        default=1,
        help="analyze: concurrent keep-alive connections (1: the latency of one request; "
        "more measure queueing behind a busy event loop)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="sends: measuring window, s")
    p.add_argument("--warmup", type=float, default=2.0, help="sends: warm-up before it, s")
    p.add_argument(
        "--batches",
        type=int,
        default=10,
        help=f"batch requests of {BATCH_SIZE}, each batch scenario",
    )
    p.add_argument("--client-procs", type=int, default=2, help="load client processes")
    p.add_argument(
        "--tracking-rate",
        type=float,
        default=TRACKING_TARGET_RATE,
        help="tracking: requests/s offered (open loop) over --sessions connections; "
        "0 = closed loop (as fast as the connections go)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help=f"run only these (repeatable or comma list): {','.join(SCENARIOS)}",
    )
    p.add_argument(
        "--sink-chunking",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the delivering scenarios' sink offers CHUNKING (BDAT), as Postfix and Gmail do",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    opts = p.parse_args(argv)
    opts.scenarios = select_scenarios(opts.only, SCENARIOS)
    counts = (opts.sessions, opts.pipe_sessions, opts.analyze_sessions, opts.client_procs)
    if min(*counts, opts.batches) < 1:
        p.error(
            "--sessions, --pipe-sessions, --analyze-sessions, --client-procs and --batches "
            "must be >= 1"
        )
    if opts.duration <= 0 or opts.warmup < 0:
        p.error("--duration must be > 0, --warmup >= 0")
    return opts


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    print_header(opts)

    def report(results: list[Result]) -> None:
        print_table(results)
        print_details(results)
        print_targets(results)

    return run_and_report(
        lambda workdir: HttpBench(opts, workdir), opts, report, prefix="mailgate-bench-http-"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

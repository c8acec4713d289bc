"""mailgate side by side with Postfix and a bare aiosmtpd, through Postfix's own load tools
(issue 18's SMTP rows): ``smtp-source`` sends, ``smtp-sink`` receives what is delivered.

Rows (``--only`` picks some), each run ``--rounds`` times (default 3) in turn, every row
once per round in this order, each against a fresh server:

* ``bare``: a bare aiosmtpd whose handle_DATA answers 250 (bench-smtp's ceiling, sink.py);
* ``mailgate-held``: ``mailgate serve`` with delivery disabled: the durable accept alone;
* ``postfix-held``: a private Postfix putting every message on hold (postfix_instance.py):
  its accept to the hold queue, the 250 after cleanup's fsync;
* ``mailgate-e2e``: mailgate delivering to smtp-sink (bench-smtp's relay.toml: one smtp
  provider, 20 connections);
* ``postfix-e2e``: Postfix relaying to smtp-sink (relayhost [127.0.0.1]:port, every
  concurrency and process limit at its default: 20 per destination, the same as
  mailgate's 20 connections; see postfix_instance.py for the rest);
* ``mailgate-dkim``: ``mailgate-e2e`` with an RSA-2048 DKIM key for example.com, the
  message's From: domain, so every copy is signed (checked on the attempt events).

Each row sends ``--warmup-messages`` first (and, delivering, waits for them at the sink),
then ``--messages`` with ``smtp-source -d -s <sessions> -m <messages> -F <2 KB message>``
(``-d``: a session keeps its connection for its next message, as bench-smtp's clients
do). Its rate is the messages over smtp-source's wall time (accept rows) or over the time
from smtp-source's start until smtp-sink's counter reached them all (delivering rows).
The report gives every round, the medians, and the issue's ratios of medians against its
targets: held >= 1.3x bare; mailgate e2e >= 1.5x Postfix e2e; mailgate e2e with DKIM
>= 1.0x Postfix's unsigned e2e.

Needs Postfix installed (Debian package ``postfix``; nothing else in mailgate does) and
root (Postfix's master starts as root); without them it says how to get there and exits
with 2. Run as ``scripts/bench-postfix``. Every step has a timeout (``--timeout``), every
process is the bench's child or its Postfix master's, and all of them are stopped and the
temp dir removed however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.orchestrator import run_and_report, select_scenarios
from bench.postfix_guard import Guard
from bench.postfix_instance import PostfixInstance
from bench.postfix_report import ROWS, Row, print_header, print_ratios, print_table
from bench.postfix_tools import Missing, SmtpSink, Tools, find_tools, run_source, write_message
from bench.probes import pending, signed_sends
from bench.processes import BenchError
from bench.smtp_load import Bench, Mailgate

SETTLE = 10.0  # s for the relay's last bookkeeping (queue, log) after the sink has all


class PostfixBench(Bench):
    """The rows, ``--rounds`` times in turn; a failed row is reported, the rest still run."""

    def __init__(self, opts: argparse.Namespace, workdir: Path, tools: Tools) -> None:
        super().__init__(opts, workdir)
        self.tools = tools
        self.message = workdir / "message.txt"
        write_message(self.message, opts.size)
        workdir.chmod(0o711)  # the Postfix instances under it run as the postfix user
        self._instances = 0
        self.guard = Guard()  # stops Postfix and smtp-sink should the bench be killed

    async def run(self, which: Sequence[str]) -> list[Row]:
        await self.guard.start()
        if not self.opts.keep_tmp:
            await self.guard.watch_dir(self.workdir)
        try:
            return await self._rounds(which)
        finally:
            await self.guard.close()

    async def _rounds(self, which: Sequence[str]) -> list[Row]:
        steps: dict[str, Callable[[Row], Awaitable[None]]] = {
            "bare": self.bare,
            "mailgate-held": self.mailgate_held,
            "postfix-held": self.postfix_held,
            "mailgate-e2e": lambda row: self.mailgate_e2e(row, dkim=False),
            "postfix-e2e": self.postfix_e2e,
            "mailgate-dkim": lambda row: self.mailgate_e2e(row, dkim=True),
        }
        out = []
        for n in range(1, self.opts.rounds + 1):
            for key in which:
                self._log(f"round {n} of {self.opts.rounds}: {key}")
                row = Row(key, n, self.opts.messages)
                try:
                    await steps[key](row)
                except BenchError as exc:
                    self._log(f"{key}: FAILED: {exc}")
                    row.failed = str(exc)
                out.append(row)
        return out

    # ---- the load

    @property
    def total(self) -> int:
        return self.opts.warmup_messages + self.opts.messages

    async def source(self, port: int, count: int) -> float:
        return await run_source(
            self.children, self.tools, port,
            message=self.message, count=count, sessions=self.opts.sessions,
            timeout=self.opts.timeout, log=self.workdir / "smtp-source.log",
        )  # fmt: skip

    async def accept_load(self, row: Row, port: int) -> None:
        """Warm-up, then the timed messages; the row's time is smtp-source's."""
        if self.opts.warmup_messages:
            await self.source(port, self.opts.warmup_messages)
        row.accept_s = await self.source(port, self.opts.messages)

    async def delivering_load(self, row: Row, port: int, sink: SmtpSink) -> None:
        """Warm-up delivered, then the timed messages: from smtp-source's start until the
        sink has them all (smtp-source's own time is kept as the accept time)."""
        if self.opts.warmup_messages:
            await self.source(port, self.opts.warmup_messages)
            await sink.wait_for(self.opts.warmup_messages, self.opts.timeout)
        base = sink.count
        t0 = time.monotonic()
        row.accept_s = await self.source(port, self.opts.messages)
        done = await sink.wait_for(base + self.opts.messages, self.opts.timeout)
        row.delivered_s = done - t0

    # ---- the rows

    async def bare(self, row: Row) -> None:
        sink = await self.start_sink()
        try:
            await self.accept_load(row, sink.port)
            got = await sink.count()
        finally:
            await self.stop_sink(sink)
        self._expect(row, got, "messages counted by the bare server")

    async def mailgate_held(self, row: Row) -> None:
        mg = await self.start_mailgate(None)
        try:
            await self.accept_load(row, mg.port)
            queued = await asyncio.to_thread(pending, mg.db)
        finally:
            await self._finish(row, mg)
        self._expect(row, queued, "deliveries queued in mailgate's database")

    async def postfix_held(self, row: Row) -> None:
        pf = self._postfix()
        try:
            port = await pf.start(None)
            await self.accept_load(row, port)
            held = pf.held()
        finally:
            await pf.stop()
        self._expect(row, held, "queue files in Postfix's hold queue")

    async def mailgate_e2e(self, row: Row, *, dkim: bool) -> None:
        key = (await self.dkim_key()).path if dkim else None
        sink = await SmtpSink.start(self.children, self.tools, self.guard.watch)
        mg: Mailgate | None = None
        try:
            mg = await self.start_mailgate(sink.port, dkim_key=key)
            await self.delivering_load(row, mg.port, sink)
            left = await self._settle(lambda: asyncio.to_thread(pending, mg.db))
            sent, signed = await asyncio.to_thread(signed_sends, mg.db)
        finally:
            if mg is not None:
                await self._finish(row, mg)
            await sink.stop(self.children)
        row.notes.append(f"{sent} sent, {left} still pending in mailgate")
        if dkim:
            row.notes.append(f"{signed} of {sent} sent copies DKIM-signed")
            if signed != sent:
                row.failed = f"only {signed} of {sent} copies were signed"

    async def postfix_e2e(self, row: Row) -> None:
        sink = await SmtpSink.start(self.children, self.tools, self.guard.watch)
        pf = self._postfix()
        try:
            port = await pf.start(sink.port)
            await self.delivering_load(row, port, sink)
            await self._settle(lambda: asyncio.to_thread(self._unlogged, pf))
            counts = pf.log_counts()
        finally:
            await pf.stop()
            await sink.stop(self.children)
        row.notes.append(", ".join(f"{n} {status}" for status, n in counts.items()))

    # ---- helpers

    def _postfix(self) -> PostfixInstance:
        self._instances += 1
        root = self.workdir / f"postfix-{self._instances}"
        return PostfixInstance(
            self.children, self.tools, root, keep=self.opts.keep_tmp, watch=self.guard.watch
        )

    def _unlogged(self, pf: PostfixInstance) -> int:
        """Messages not yet logged as sent (maillog is written a moment after the 250)."""
        return max(0, self.total - pf.log_counts()["sent"])

    async def _settle(self, left: Callable[[], Awaitable[int]]) -> int:
        """Poll ``left()`` until 0 or SETTLE s; its last value."""
        deadline = time.monotonic() + SETTLE
        while (n := await left()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return n

    async def _finish(self, row: Row, mg: Mailgate) -> None:
        code, problems = await self.finish_mailgate(mg)
        if code != 0:
            row.notes.append(f"mailgate exited with {code}")
        if problems:
            row.notes.append(f"mailgate logged {len(problems)} warning(s): {problems[0][:160]}")

    def _expect(self, row: Row, got: int, what: str) -> None:
        row.notes.append(f"{got} {what}")
        if got != self.total:
            row.failed = f"{got} {what}, expected {self.total}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench-postfix",
        description="mailgate against Postfix and a bare aiosmtpd, under smtp-source and "
        "smtp-sink (127.0.0.1; needs Postfix installed, and root).",
    )
    p.add_argument("--messages", type=int, default=10_000, help="timed messages per row")
    p.add_argument("--warmup-messages", type=int, default=500, help="sent first, not timed")
    p.add_argument("--sessions", type=int, default=50, help="smtp-source -s")
    p.add_argument("--size", type=int, default=2048, help="message size, bytes")
    p.add_argument("--rounds", type=int, default=3, help="every row once per round")
    p.add_argument("--timeout", type=float, default=600.0, help="limit of every load, s")
    p.add_argument(
        "--only",
        action="append",
        metavar="ROW",
        help=f"run only these rows (repeatable or comma list): {','.join(ROWS)}",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="mailgate's [server] log_level",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    opts = p.parse_args(argv)
    opts.scenarios = select_scenarios(opts.only, ROWS)
    opts.client_procs = 1  # bench-smtp's load clients are not used here
    if opts.messages < 1 or opts.sessions < 1 or opts.rounds < 1 or opts.warmup_messages < 0:
        p.error("--messages, --sessions and --rounds must be >= 1, --warmup-messages >= 0")
    if opts.timeout <= 0:
        p.error("--timeout must be > 0")
    from bench.message import MessageFactory

    if opts.size < MessageFactory.minimum_size():
        p.error(f"--size must be at least {MessageFactory.minimum_size()}")
    return opts


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    try:
        tools = find_tools()
    except Missing as exc:
        print(f"bench-postfix: {exc}", file=sys.stderr)
        return 2
    print_header(opts, tools)

    def report(rows: list[Row]) -> None:
        print_table(rows, opts.rounds)
        print_ratios(rows)

    return run_and_report(
        lambda workdir: PostfixBench(opts, workdir, tools),
        opts,
        report,
        prefix="mailgate-bench-postfix-",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

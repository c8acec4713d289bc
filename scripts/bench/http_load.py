"""The HTTP bench's orchestrator core: a relay per scenario (with an API key, delivering
to the sink), its RSS, and the send load: client processes posting one dialect's sends
in a timed window, their figures merged into a Result."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import HOST
from bench.config import http_relay_toml
from bench.http_requests import SEND_KINDS, SendFactory
from bench.orchestrator import ChildrenBench, parse_results
from bench.processes import RssSampler, cpu_ms_per, cpu_probe
from bench.stats import nearest_rank

SCENARIOS = (
    *("bare-send", "send", "send-held", "mailsage-send", "messagepipe-send", "batch"),
    "mailsage-batch",
    *("analyze", "tracking"),
)
TITLES = {
    "bare-send": "bare Starlette+uvicorn, same send (202)",
    "send": "POST /v1/messages/send",
    "send-held": "POST /v1/messages/send, delivery held",
    "mailsage-send": "MailSage /api/v1/emails/send",
    "messagepipe-send": "MessagePipe /email/send (waits)",
    "batch": "POST /v1/messages/batch (x1000)",
    "mailsage-batch": "MailSage /api/v1/emails/batch (x1000)",
    "analyze": "POST /v1/messages/analyze (no DNS)",
    "tracking": "GET /t/o + /t/c (pixel, click)",
}


@dataclass
class Mailgate:
    proc: asyncio.subprocess.Process
    port: int
    key: str
    log: Path


@dataclass
class Result:
    name: str
    rate: float = 0.0  # accepted messages per second
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    peak_rss: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failed: str = ""

    def percentile(self, q: float) -> float:
        return nearest_rank(sorted(self.latencies_ms), q)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=float("nan"))


class HttpLoad(ChildrenBench):
    """What the HTTP scenarios run on: a relay with a key, and the send load."""

    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        super().__init__(opts, workdir, "bench.http_client")
        self._public_url = ""  # set for the tracking scenario

    async def start_mailgate(self, sink_port: int, *, deliver: bool = True) -> Mailgate:
        workdir = self.relay_dir()
        config = workdir / "relay.toml"
        toml = http_relay_toml(workdir, sink_port, "info", self._public_url, deliver=deliver)
        config.write_text(toml)
        key = await self.create_key(config)
        log = workdir / "mailgate.log"
        proc = await self.spawn_serve(config, log)
        port = await self._wait_listening(proc, log, "HTTP API")
        return Mailgate(proc, port, key, log)

    async def _with_mailgate(
        self,
        name: str,
        body: Callable[[Mailgate, Result], Awaitable[None]],
        *,
        deliver: bool = True,
    ) -> Result:
        """Sink + fresh mailgate around one scenario; RSS sampled; both stopped after.

        The sink is the lean one of the delivering SMTP scenarios (sink.LeanSink): it
        stands for a provider on another machine, and aiosmtpd took 0.25-0.3 ms of CPU
        per message on the relay's two cores, about a third of a core at these rates."""
        res = Result(TITLES[name])
        sink = await self.start_sink(track=True)
        mg: Mailgate | None = None
        try:
            mg = await self.start_mailgate(sink.port, deliver=deliver)
            self._log(f"{name}: mailgate HTTP on {HOST}:{mg.port} -> sink on {HOST}:{sink.port}")
            async with RssSampler(mg.proc.pid) as rss:
                await body(mg, res)
            res.peak_rss = rss.peak
            res.extra["sink_total"] = await sink.count()
        finally:
            if mg is not None:
                res.extra["exit"], res.problems = await self.finish_mailgate(mg)
            await self.stop_sink(sink)
        return res

    # ---- send

    def _send_load(self, kind: str) -> Callable[[Mailgate, Result], Awaitable[None]]:
        async def load(mg: Mailgate, res: Result) -> None:
            await self._send_clients(kind, mg, res, self.opts.sessions)

        return load

    async def _send_clients(
        self,
        kind: str,
        mg: Mailgate,
        res: Result,
        sessions: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        opts = self.opts

        def go(i: int) -> dict[str, Any]:
            return {"key": mg.key, "base": i * 10**11, "kind": kind, **(extra or {})}

        def announce(connected: int) -> None:
            self._log(f"{kind}: {connected}/{sessions} connections; loading")

        run = await self.run_clients(
            [[str(mg.port), str(n)] for n in self._split(sessions)],
            "http client",
            lead=opts.warmup,
            length=opts.duration,
            go=go,
            probe=cpu_probe,
            on_ready=announce,
        )
        self._merge(kind, res, run.lines, run.end - run.start, run.connected, sessions)
        res.extra["cpu_ms"] = cpu_ms_per(run.edges, res.extra.get("accepted", 0))

    def _merge(
        self,
        kind: str,
        res: Result,
        lines: Sequence[str],
        window: float,
        connected: int,
        sessions: int,
    ) -> None:
        for r in parse_results(lines, "http client"):
            res.errors.update(r["errors"])
            for error, body in r["samples"].items():
                res.samples.setdefault(error, body)
            res.latencies_ms.extend(us / 1000 for us in r["latencies_us"])
            res.extra["accepted"] = res.extra.get("accepted", 0) + r["accepted"]
            res.extra["accepted_total"] = res.extra.get("accepted_total", 0) + r["accepted_total"]
            res.extra["loop"] = r["loop"]
            res.extra["late"] = res.extra.get("late", 0) + r.get("late", 0)
        res.rate = res.extra["accepted"] / window
        res.extra.update(window=window, connected=connected, sessions=sessions)
        if kind == "tracking":
            res.extra.update(body_size=0, expect="200/302")
            return
        factory = SendFactory(SEND_KINDS[kind], 0, "")
        res.extra.update(body_size=factory.body_size, expect=factory.expect)

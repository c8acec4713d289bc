"""The SMTP bench's orchestrator core: a relay per scenario (held or delivering, its
options in relay.toml), and the load: client processes in a timed window (warm-up, then
measuring), open or closed loop, or a quota of messages (a fill); their figures merged."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import DeadProvider, free_port, relay_toml
from bench.dkim_keys import DkimKeyFile, make_dkim_key
from bench.orchestrator import ChildrenBench, ClientRun, Probe, parse_results
from bench.probes import loop_lag_buckets
from bench.smtp_results import LoadResult


@dataclass
class Mailgate:
    """A running relay of the SMTP bench."""

    proc: asyncio.subprocess.Process
    port: int
    db: Path
    log: Path
    http_port: int = 0  # only /metrics is read, for the event loop lag


class Bench(ChildrenBench):
    """What the SMTP scenarios (and bench-pg's) run on: the relay and the load."""

    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        super().__init__(opts, workdir, "bench.smtp_client")
        self._dkim: DkimKeyFile | None = None

    async def start_mailgate(
        self,
        sink_port: int | None,
        *,
        dkim_key: Path | None = None,
        dead: DeadProvider | None = None,
        webhook_url: str | None = None,
    ) -> Mailgate:
        workdir = self.relay_dir()
        config = workdir / "relay.toml"
        # 'SMTP listening on' is an INFO line; above info we must choose the port ourselves.
        quiet = self.opts.log_level in ("warning", "error")
        listen_port = free_port() if quiet else 0
        http_port = free_port()
        config.write_text(
            relay_toml(
                workdir,
                sink_port,
                self.opts.log_level,
                listen_port,
                http_port=http_port,
                dkim_key=dkim_key,
                dead=dead,
                webhook_url=webhook_url,
            )
        )
        log = workdir / "mailgate.log"
        proc = await self.spawn_serve(config, log)
        if quiet:
            port = await self._wait_connectable(proc, log, listen_port)
        else:
            port = await self._wait_listening(proc, log)
        return Mailgate(proc, port, workdir / "data" / "mailgate.db", log, http_port)

    async def dkim_key(self) -> DkimKeyFile:
        """One RSA-2048 key for every signing scenario of this run."""
        if self._dkim is None:
            self._dkim = await asyncio.to_thread(make_dkim_key, self.workdir)
        return self._dkim

    async def run_load(
        self,
        port: int,
        *,
        quota: int | None = None,
        probe: Probe | None = None,
        track: bool = False,
        rate: float | None = None,
        lag_port: int = 0,
    ) -> tuple[LoadResult, dict[str, Any]]:
        """Run the client processes against ``port``; sample ``probe`` at window edges.

        Timed mode: warm-up then a measuring window. Quota mode (``quota`` messages): as
        fast as possible, until done or ``--fill-timeout``. ``track``: the clients return
        (queue id, monotonic time) of every 250 in the window. ``rate``: open loop, the
        clients together start that many messages/s (split by their sessions).
        ``lag_port``: mailgate's HTTP port; its event loop lag in the window is returned
        under the "lag" key.
        """
        opts = self.opts
        sessions = self._split(opts.sessions)
        if quota is None:
            lead, length = opts.warmup, opts.duration
            quotas: list[int | None] = [None] * len(sessions)
        else:
            lead, length = 0.0, opts.fill_timeout
            quotas = list(self._split_quota(quota, sessions))

        def go(i: int) -> dict[str, Any]:
            message: dict[str, Any] = {"quota": quotas[i]}
            if rate is not None:
                message["rate"] = rate * sessions[i] / sum(sessions)
            return message

        run = await self.run_clients(
            [self.client_argv(port, n, track) for n in sessions],
            "load client",
            lead=lead,
            length=length,
            go=go,
            probe=self._with_lag(probe, lag_port),
        )
        load = self._merge(run, quota)
        load.rate = rate
        return load, run.edges

    def client_argv(self, port: int, sessions: int, track: bool) -> list[str]:
        """The arguments of one load client process (see smtp_client.py)."""
        return [str(port), str(sessions), str(self.opts.size), "track" if track else "-"]

    def _split_quota(self, quota: int, sessions: list[int]) -> list[int]:
        total = sum(sessions)
        shares = [quota * n // total for n in sessions]
        shares[0] += quota - sum(shares)
        return shares

    @staticmethod
    def _with_lag(probe: Probe | None, lag_port: int) -> Probe | None:
        """``probe`` plus mailgate's event loop lag histogram."""
        if not lag_port:
            return probe

        async def both() -> dict[str, Any]:
            got = await probe() if probe else {}
            got["lag"] = await asyncio.to_thread(loop_lag_buckets, lag_port)
            return got

        return both

    def _merge(self, run: ClientRun, quota: int | None) -> LoadResult:
        results: Sequence[dict[str, Any]] = parse_results(run.lines, "load client")
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"])
        load = LoadResult(
            accepted=sum(r["accepted"] for r in results),
            window=run.end - run.start,
            latencies_us=[x for r in results for x in r["latencies_us"]],
            errors=errors,
            connected=run.connected,
            sessions=self.opts.sessions,
            loop=results[0]["loop"],
            accepted_total=sum(r["accepted_total"] for r in results),
            last_accept=max(r["last_accept"] for r in results),
            go=run.go,
            acks=[(qid, t) for r in results for qid, t in r.get("acks", ())],
            late=sum(r.get("late", 0) for r in results),
        )
        if quota is not None:  # the window of a fill is however long it took
            load.window = max(load.last_accept - run.go, 1e-9)
            load.timed = False
        return load

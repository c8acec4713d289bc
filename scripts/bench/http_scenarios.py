"""The HTTP bench's scenarios: the bare Starlette reference and the native, MailSage,
MessagePipe and analyze sends (a timed load each), the tracking GETs, and the batches of
1000 (sequential requests, each timed); a failed one is reported, the rest still run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench import HOST, REPLY_TIMEOUT
from bench.http_client import ProtocolError, read_response
from bench.http_load import TITLES, HttpLoad, Mailgate, Result
from bench.http_requests import (
    BATCH_PATH,
    BATCH_SIZE,
    BENCH_TEMPLATE,
    MAILSAGE_BATCH_PATH,
    SAMPLE_BYTES,
    SEND_PATH,
    TEMPLATES_PATH,
    batch_body,
    mailsage_batch_body,
    request_head,
    send_body,
)
from bench.http_tracking import recorded, tokens, tracking_key
from bench.processes import BenchError, RssSampler, cpu_ms_per, cpu_seconds

TRACKED_MESSAGES = 200  # sent before the tracking load; their tokens are requested in turn


class HttpBench(HttpLoad):
    async def send(self) -> Result:
        return await self._with_mailgate("send", self._send_load("send"))

    async def send_held(self) -> Result:
        """``send`` with delivery disabled: the accept path alone, as bench-smtp's held
        row measures SMTP's (the bare reference delivers nothing either)."""
        return await self._with_mailgate("send-held", self._send_load("send"), deliver=False)

    async def bare_send(self) -> Result:
        """The reference: the send load against http_bare.py (see there)."""
        res = Result(TITLES["bare-send"])
        log = self.workdir / "bare.log"
        with open(log, "wb") as fh:
            proc = await self.spawn_python(
                "bench.http_bare",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fh,
                stderr=fh,
            )
        try:
            port = await self._wait_listening(proc, log, "HTTP API")
            self._log(f"bare-send: Starlette + uvicorn on {HOST}:{port}")
            async with RssSampler(proc.pid) as rss:
                await self._send_clients(
                    "send", Mailgate(proc, port, "bench", log), res, self.opts.sessions
                )
            res.peak_rss = rss.peak
        finally:
            await self.children.stop(proc, 10.0)
        return res

    async def mailsage_send(self) -> Result:
        return await self._with_mailgate("mailsage-send", self._send_load("mailsage-send"))

    async def messagepipe_send(self) -> Result:
        async def body(mg: Mailgate, res: Result) -> None:
            await self._create_template(mg)
            await self._send_clients("messagepipe-send", mg, res, self.opts.pipe_sessions)

        return await self._with_mailgate("messagepipe-send", body)

    async def analyze(self) -> Result:
        async def body(mg: Mailgate, res: Result) -> None:
            await self._send_clients("analyze", mg, res, self.opts.analyze_sessions)

        return await self._with_mailgate("analyze", body)

    async def _create_template(self, mg: Mailgate) -> None:
        """MessagePipe sends name a template: ``BENCH_TEMPLATE``, made once (201)."""
        body = json.dumps(BENCH_TEMPLATE).encode()
        reader, writer = await asyncio.open_connection(HOST, mg.port)
        try:
            writer.write(request_head(TEMPLATES_PATH, mg.port, mg.key, len(body)) + body)
            async with asyncio.timeout(REPLY_TIMEOUT):
                status, answer, _ = await read_response(reader)
        finally:
            writer.close()
        if status != 201:
            raise BenchError(f"POST {TEMPLATES_PATH}: HTTP {status}: {answer[:SAMPLE_BYTES]!r}")

    async def tracking(self) -> Result:
        async def load(mg: Mailgate, res: Result) -> None:
            ids = await self._tracked_sends(mg, TRACKED_MESSAGES)
            db = self.workdir / f"mailgate-{self._runs}" / "data" / "mailgate.db"
            pairs = tokens(tracking_key(db), ids)
            extra: dict[str, Any] = {"tokens": pairs}
            res.extra["paced"] = self.opts.tracking_rate or None
            if self.opts.tracking_rate > 0:  # open loop: each client process its share
                procs = len(self._split(self.opts.sessions))
                extra.update(rate=self.opts.tracking_rate / procs, paced_from=time.time())
            await self._send_clients("tracking", mg, res, self.opts.sessions, extra)

        self._public_url = "https://track.bench.test"
        try:
            res = await self._with_mailgate("tracking", load)
        finally:
            self._public_url = ""
        # Answered before written: after the stop every answered request is an event.
        db = self.workdir / f"mailgate-{self._runs}" / "data" / "mailgate.db"
        res.extra["recorded"] = recorded(db)
        return res

    async def _tracked_sends(self, mg: Mailgate, count: int) -> list[str]:
        """Send ``count`` messages with tracking on, one after another; their ids."""
        ids = []
        reader, writer = await asyncio.open_connection(HOST, mg.port)
        try:
            for n in range(count):
                fields = {**send_body(f"{n:012d}"), "tracking": {"opens": True, "clicks": True}}
                body = json.dumps(fields).encode()
                writer.write(request_head(SEND_PATH, mg.port, mg.key, len(body)) + body)
                async with asyncio.timeout(REPLY_TIMEOUT):
                    status, answer, _ = await read_response(reader)
                if status != 202:
                    raise BenchError(f"tracked send: HTTP {status}: {answer[:SAMPLE_BYTES]!r}")
                ids.append(json.loads(answer)["data"]["id"])
        finally:
            writer.close()
        return ids

    # ---- batch

    async def batch(self) -> Result:
        async def requests(mg: Mailgate, res: Result) -> None:
            await self._batch_requests("batch", BATCH_PATH, batch_body, self._batch_queued, mg, res)

        return await self._with_mailgate("batch", requests)

    async def mailsage_batch(self) -> Result:
        async def requests(mg: Mailgate, res: Result) -> None:
            await self._batch_requests(
                "mailsage-batch",
                MAILSAGE_BATCH_PATH,
                mailsage_batch_body,
                self._mailsage_queued,
                mg,
                res,
            )

        return await self._with_mailgate("mailsage-batch", requests)

    async def _batch_requests(
        self,
        name: str,
        path: str,
        make_body: Callable[[int], bytes],
        count: Callable[[Result, int, bytes], int],
        mg: Mailgate,
        res: Result,
    ) -> None:
        """Sequential batches on one keep-alive connection; each timed on its own."""
        bodies = [make_body(i) for i in range(self.opts.batches)]  # built before timing
        res.extra["body_size"] = len(bodies[0])
        queued: list[int] = []
        self._log(f"{name}: {len(bodies)} requests of {BATCH_SIZE} recipients")
        reader, writer = await asyncio.open_connection(HOST, mg.port)
        cpu_start = cpu_seconds()
        try:
            for body in bodies:
                payload = request_head(path, mg.port, mg.key, len(body)) + body
                t0 = time.perf_counter()
                writer.write(payload)
                async with asyncio.timeout(REPLY_TIMEOUT):
                    status, answer, close = await read_response(reader)
                res.latencies_ms.append((time.perf_counter() - t0) * 1000)
                queued.append(count(res, status, answer))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, mg.port)
        finally:
            writer.close()
        # Per message, from the first request to the last answer: what a batch costs each
        # process (the delivery of its messages goes on meanwhile and is counted too).
        edges = {"start": {"cpu": cpu_start}, "end": {"cpu": cpu_seconds()}}
        res.extra["cpu_ms"] = cpu_ms_per(edges, sum(queued))
        res.extra["cpu_per"] = "message"
        elapsed = sum(res.latencies_ms) / 1000
        res.rate = sum(queued) / elapsed if elapsed else 0.0
        res.extra.update(queued=queued, all_queued=all(q == BATCH_SIZE for q in queued))

    @staticmethod
    def _batch_queued(res: Result, status: int, answer: bytes) -> int:
        """The answer's ``queued``; a non-202 or a short count is recorded as an error."""
        if _refused(res, status, answer):
            return 0
        data = json.loads(answer)["data"]
        if data["queued"] != BATCH_SIZE:
            kind = f"queued {data['queued']} of {data['total']}"
            res.errors[kind] += 1
            rejected = [m for m in data["messages"] if m["status"] == "rejected"][:1]
            res.samples.setdefault(kind, json.dumps(rejected)[:SAMPLE_BYTES])
        return int(data["queued"])

    @staticmethod
    def _mailsage_queued(res: Result, status: int, answer: bytes) -> int:
        """MailSage's ``recipient_count``; a non-202 or a short count is recorded as an error."""
        if _refused(res, status, answer):
            return 0
        data = json.loads(answer)
        count = int(data.get("recipient_count", 0))
        if count != BATCH_SIZE:
            kind = f"recipient_count {count} of {BATCH_SIZE}"
            res.errors[kind] += 1
            res.samples.setdefault(kind, answer[:SAMPLE_BYTES].decode(errors="replace"))
        return count

    async def run(self, which: Sequence[str]) -> list[Result]:
        steps: dict[str, Callable[[], Awaitable[Result]]] = {
            "bare-send": self.bare_send,
            "send": self.send,
            "send-held": self.send_held,
            "mailsage-send": self.mailsage_send,
            "messagepipe-send": self.messagepipe_send,
            "batch": self.batch,
            "mailsage-batch": self.mailsage_batch,
            "analyze": self.analyze,
            "tracking": self.tracking,
        }
        out = []
        for name in which:
            try:
                out.append(await steps[name]())
            except (BenchError, OSError, TimeoutError, ProtocolError) as exc:
                self._log(f"{name}: FAILED: {exc!r}")
                out.append(Result(TITLES[name], failed=f"{type(exc).__name__}: {exc}"))
        return out


def _refused(res: Result, status: int, answer: bytes) -> bool:
    """A batch answer other than 202: recorded as an error, with a sample of its body."""
    if status == 202:
        return False
    kind = f"HTTP {status}"
    res.errors[kind] += 1
    res.samples.setdefault(kind, answer[:SAMPLE_BYTES].decode(errors="replace"))
    return True

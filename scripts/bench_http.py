#!/usr/bin/env python3
"""HTTP API throughput of mailgate: native send and batch, and the compat dialects' ones.

Scenarios (``--only`` picks some), each against a fresh ``mailgate serve`` (temp dir, SQLite,
SMTP off, HTTP on a kernel-chosen loopback port) delivering to the no-op SMTP sink of
bench_smtp.py, with an API key made by ``mailgate keys create``:

* ``bare-send``: the reference: the ``send`` load against a bare Starlette + uvicorn app
  answering 202 to the same request (bench_http_bare.py); ``send`` is compared with it.
* ``send``: ``--sessions`` keep-alive HTTP/1.1 connections, each posting a ~2 KB message
  (html + text, tags, metadata) and waiting for the answer, for ``--duration`` s after
  ``--warmup`` s. A 202 is an accepted message; anything else is an error (a sample body
  of each kind is printed).
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
  with tracking on (see bench_http_tracking.py); each records an event.

Why the load client is raw asyncio streams on uvloop in two processes rather than httpx: it
must not be the bottleneck on a small machine. It writes prebuilt request bytes and reads
only the status line, the headers and a Content-Length body. The child processes and the
control protocol (READY / GO / RESULT over pipes) are those of bench_smtp.py, imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_smtp lives beside us

from bench_http_tracking import (
    TRACKING_TARGET_P99_MS,
    TRACKING_TARGET_RATE,
    TrackingFactory,
    recorded,
    tokens,
    tracking_key,
)
from bench_smtp import (
    HOST,
    START_TIMEOUT,
    BenchError,
    ChildrenBench,
    Plan,
    RssSampler,
    _body_lines,
    _read_line,
    _say,
    _stdin_reader,
    _toml_str,
    log_problems,
    nearest_rank,
    run_in_tempdir,
    select_scenarios,
    verdict,
)

SCENARIOS = (
    *("bare-send", "send", "mailsage-send", "messagepipe-send", "batch", "mailsage-batch"),
    *("analyze", "tracking"),
)
TITLES = {
    "bare-send": "bare Starlette+uvicorn, same send (202)",
    "send": "POST /v1/messages/send",
    "mailsage-send": "MailSage /api/v1/emails/send",
    "messagepipe-send": "MessagePipe /email/send (waits)",
    "batch": "POST /v1/messages/batch (x1000)",
    "mailsage-batch": "MailSage /api/v1/emails/batch (x1000)",
    "analyze": "POST /v1/messages/analyze (no DNS)",
    "tracking": "GET /t/o + /t/c (pixel, click)",
}
SEND_VS_BARE = 0.3  # issue 18: single sends at least this share of the framework's ceiling
TRACKED_MESSAGES = 200  # sent before the tracking load; their tokens are requested in turn
SEND_PATH = "/v1/messages/send"
BATCH_PATH = "/v1/messages/batch"
MAILSAGE_SEND_PATH = "/api/v1/emails/send"
MAILSAGE_BATCH_PATH = "/api/v1/emails/batch"
MESSAGEPIPE_SEND_PATH = "/email/send"
TEMPLATES_PATH = "/v1/templates"
BENCH_TEMPLATE = {"id": "bench-tpl", "name": "bench", "subject": "s", "text": "Hi {{ name }}"}
DEFAULT_FROM = "bench@example.com"  # [compat] default_from, on the bench's [[domains]]
BATCH_SIZE = 1000  # the API's maximum, and what the target is about
REPLY_TIMEOUT = 30.0  # a stalled server fails a request instead of hanging the run
SAMPLE_BYTES = 300
SEND_TARGET = 1000.0  # msg/s
BATCH_TARGET_MS = 500.0
COMPAT_RATIO_TARGET = 0.9  # mailsage-send rate / send rate, same run
MESSAGEPIPE_P50_TARGET_MS = 100.0
ANALYZE_PATH = "/v1/messages/analyze?dns=false"
ANALYZE_P99_TARGET_MS = 50.0

# ----------------------------------------------------------------------- HTTP, lean


class ProtocolError(Exception):
    """The server said something this small client does not handle."""


def request_head(path: str, port: int, key: str, length: int, *, api_key: bool = False) -> bytes:
    """Request line and headers of a JSON POST; the body follows as is.

    ``api_key``: the key in ``x-api-key`` (MessagePipe's clients) instead of Bearer.
    """
    auth = f"x-api-key: {key}" if api_key else f"Authorization: Bearer {key}"
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        f"{auth}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {length}\r\n"
        "\r\n"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server is closing the connection.

    Only what mailgate's JSON answers need: a Content-Length body (chunked is refused as a
    protocol error rather than parsed, so a surprise shows up as an error, not a hang).
    """
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("server closed the connection")
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ProtocolError(f"bad status line {line[:80]!r}")
    status = int(parts[1])
    length, close = 0, parts[0] == b"HTTP/1.0"
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked response: not handled by the bench client")
    body = await reader.readexactly(length) if length else b""
    return status, body, close


@dataclass(frozen=True)
class SendKind:
    """One dialect's single send: where it goes, how the key travels, what success is."""

    path: str
    body: Callable[[str], dict[str, Any]]
    expect: int = 202
    api_key: bool = False


class SendFactory:
    """The same ~2 KB send request with a different order number each time, cheaply.

    The number is fixed-width, so the request bytes around it (headers included, with
    Content-Length) are built once and each request is a join of a few byte strings.
    """

    MARK = "@@@@@@@@@@@@"  # 12 characters, replaced by the request number

    def __init__(self, kind: SendKind, port: int, key: str) -> None:
        body = json.dumps(kind.body(self.MARK), separators=(",", ":")).encode()
        parts = body.split(self.MARK.encode())
        parts[0] = request_head(kind.path, port, key, len(body), api_key=kind.api_key) + parts[0]
        self._parts = parts
        self.body_size = len(body)
        self.expect = kind.expect

    def make(self, n: int) -> bytes:
        return f"{n:012d}".encode().join(self._parts)

    def expected(self, n: int) -> int:
        return self.expect


def send_body(order: str) -> dict[str, Any]:
    """What an application's transactional send looks like: both parts, tags, metadata."""
    lines = _body_lines(9)
    html = "".join(f"<p>{line}</p>\n" for line in lines)
    text = "\n\n".join(lines)
    return {
        "from": "Bench Sender <bench@example.com>",
        "to": "Bench Recipient <rcpt@example.net>",
        "subject": f"Your order #{order} has shipped",
        "html": f"<html><body><h1>Order #{order}</h1>\n{html}</body></html>",
        "text": f"Order #{order}\n\n{text}",
        "tags": ["transactional", "orders", "bench"],
        "metadata": {"user_id": "usr_123", "order_id": order, "source": "bench-http"},
    }


def mailsage_send_body(order: str) -> dict[str, Any]:
    """The native send's content in MailSage's shape: one body (html, as it has markup),
    variables rendered into the subject; the sender is ``[compat] default_from``."""
    lines = _body_lines(9)
    html = "".join(f"<p>{line}</p>\n" for line in lines)
    return {
        "recipient": {
            "email": "rcpt@example.net",
            "variables": {"name": "Bench Recipient", "order": order, "user_id": "usr_123"},
        },
        "subject": "Your order #{{ order }} has shipped",
        "body": f"<html><body><h1>Order #{order}</h1>\n{html}</body></html>",
    }


def messagepipe_send_body(order: str) -> dict[str, Any]:
    """MessagePipe's send: a template (``BENCH_TEMPLATE``), its variables, a subject."""
    return {
        "templateId": BENCH_TEMPLATE["id"],
        "to": "rcpt@example.net",
        "subject": f"Your order #{order} has shipped",
        "variables": {"name": f"Bench Recipient {order}", "order": order},
    }


def analyze_body(order: str) -> dict[str, Any]:
    """A newsletter-like message: sections with links and images, a text part, tags."""
    lines = _body_lines(9)
    sections = "".join(
        f"<h2>Section {i}</h2><p>{line} <a href='https://example.com/p/{order}/{i}'>Read "
        f"more</a></p><img src='https://cdn.example.com/{i}.png' alt='picture {i}'>\n"
        for i, line in enumerate(lines * 3)
    )
    return {
        "from": "News <news@example.com>",
        "to": "Reader <rcpt@example.net>",
        "subject": f"Our news of the week, issue {order}",
        "html": f"<html><body><h1>Issue {order}</h1>{sections}</body></html>",
        "text": "\n\n".join(lines * 3),
        "tags": ["newsletter", "bench"],
        "headers": {"List-Unsubscribe": "<https://example.com/u/bench>"},
    }


SEND_KINDS = {
    "send": SendKind(SEND_PATH, send_body),
    "mailsage-send": SendKind(MAILSAGE_SEND_PATH, mailsage_send_body),
    "messagepipe-send": SendKind(MESSAGEPIPE_SEND_PATH, messagepipe_send_body, 201, True),
    "analyze": SendKind(ANALYZE_PATH, analyze_body, 200),
}


def batch_body(batch_no: int, size: int = BATCH_SIZE) -> bytes:
    """One batch: ``size`` recipients, each with its own name and code."""
    variables = {
        f"user{batch_no:02d}.{i:04d}@example.net": {
            "name": f"User {batch_no}-{i}",
            "code": f"{(batch_no * 7919 + i * 104729) % 1_000_000:06d}",
        }
        for i in range(size)
    }
    body = {
        "from": "Bench Sender <bench@example.com>",
        "subject": "Hi {{ name }}",
        "html": "<p>Hi {{ name }},</p><p>your sign-in code is <b>{{ code }}</b>.</p>",
        "text": "Hi {{ name }},\n\nyour sign-in code is {{ code }}.",
        "tags": ["batch", "bench"],
        "metadata": {"campaign": "bench-http"},
        "recipient_variables": variables,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def mailsage_batch_body(batch_no: int, size: int = BATCH_SIZE) -> bytes:
    """The native batch's recipients and content in MailSage's shape (one html body)."""
    recipients = [
        {
            "email": f"user{batch_no:02d}.{i:04d}@example.net",
            "variables": {
                "name": f"User {batch_no}-{i}",
                "code": f"{(batch_no * 7919 + i * 104729) % 1_000_000:06d}",
            },
        }
        for i in range(size)
    ]
    body = {
        "recipients": recipients,
        "subject": "Hi {{ name }}",
        "body": "<p>Hi {{ name }},</p><p>your sign-in code is <b>{{ code }}</b>.</p>",
        "campaign_id": "bench-http",
    }
    return json.dumps(body, separators=(",", ":")).encode()


# ------------------------------------------------------------------ client (child)


@dataclass
class ClientStats:
    accepted: int = 0  # the kind's success status inside the window
    accepted_total: int = 0
    latencies_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # one body per kind of error
    connects: int = 0


class HttpSession:
    """One keep-alive connection posting sends, one at a time, until the plan ends."""

    def __init__(self, port: int, stats: ClientStats) -> None:
        self._port = port
        self._stats = stats
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        except (OSError, TimeoutError) as exc:
            self._stats.errors[f"connect: {type(exc).__name__}"] += 1
            return False
        self._stats.connects += 1
        return True

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def _error(self, kind: str, body: bytes = b"") -> None:
        self._stats.errors[kind] += 1
        if kind not in self._stats.samples:
            self._stats.samples[kind] = body[:SAMPLE_BYTES].decode(errors="replace")

    async def _request(self, plan: Plan, payload: bytes, expect: int) -> bool:
        assert self._reader is not None and self._writer is not None
        t0 = time.perf_counter()
        self._writer.write(payload)
        status, body, close = await read_response(self._reader)
        elapsed = time.perf_counter() - t0
        if close:
            self._drop()
        if status != expect:
            self._error(f"HTTP {status}", body)
            return False
        now = time.time()
        self._stats.accepted_total += 1
        if plan.start <= now < plan.end:
            self._stats.accepted += 1
            self._stats.latencies_us.append(int(elapsed * 1e6))
        return True

    async def run(
        self, plan: Plan, factory: SendFactory | TrackingFactory, counter: list[int]
    ) -> None:
        while plan.take():
            await plan.pace()  # paced (open-loop) runs only
            ok = False
            if self.connected or await self.connect():
                counter[0] += 1
                try:
                    async with asyncio.timeout(REPLY_TIMEOUT):
                        payload = factory.make(counter[0])
                        ok = await self._request(plan, payload, factory.expected(counter[0]))
                except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as exc:
                    self._error(f"session: {type(exc).__name__}", str(exc).encode())
                    self._drop()
            if not ok:
                await asyncio.sleep(0.01)  # no hot loop against a refusing server
        self._drop()


async def client_main(port: int, sessions: int) -> None:
    """Connect all sessions, say READY, wait for GO {start,end,key,base,kind}, run, say RESULT.

    The API key comes with GO (on stdin) rather than in argv, where ps would show it.
    """
    control = await _stdin_reader()
    stats = ClientStats()
    clients = [HttpSession(port, stats) for _ in range(sessions)]
    await asyncio.gather(*(c.connect() for c in clients))
    _say(f"READY {sum(c.connected for c in clients)}")
    line = await control.readline()
    if not line.startswith(b"GO "):
        return
    go = json.loads(line[3:])
    plan = Plan(
        start=go["start"], end=go["end"], rate=go.get("rate"), paced_from=go.get("paced_from", 0)
    )
    factory: SendFactory | TrackingFactory
    if go["kind"] == "tracking":
        factory = TrackingFactory(port, go["tokens"])
    else:
        factory = SendFactory(SEND_KINDS[go["kind"]], port, go["key"])
    counter = [go["base"]]  # distinct order numbers across client processes
    await asyncio.gather(*(c.run(plan, factory, counter) for c in clients))
    loop = asyncio.get_running_loop()
    result = {
        "accepted": stats.accepted,
        "accepted_total": stats.accepted_total,
        "latencies_us": stats.latencies_us,
        "errors": dict(stats.errors),
        "samples": stats.samples,
        "connects": stats.connects,
        "late": plan.late,
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
    }
    _say("RESULT " + json.dumps(result, separators=(",", ":")))


# --------------------------------------------------------------------- mailgate


@dataclass
class Mailgate:
    proc: asyncio.subprocess.Process
    port: int
    key: str
    log: Path


def relay_toml(workdir: Path, sink_port: int, log_level: str, public_url: str = "") -> str:
    """SMTP off, HTTP on a kernel-chosen loopback port, SQLite under workdir, the sink as
    the only provider (delivery runs, as it would in production: MessagePipe's send waits
    for it), and a compat default sender for the dialects' requests, which carry none."""
    return (
        "[server]\n"
        'hostname = "mailgate.bench.test"\n'
        f"data_dir = {_toml_str(workdir / 'data')}\n"
        f'log_level = "{log_level}"\n\n'
        "[smtp]\n"
        "listen = []\n\n"
        "[http]\n"
        'listen = ["127.0.0.1:0"]\n'
        + (f'public_url = "{public_url}"\n' if public_url else "")
        + "\n"
        "[[domains]]\n"
        'name = "example.com"\n\n'
        "[delivery]\n"
        'shutdown_grace = "5s"\n\n'
        "[compat]\n"
        f'default_from = "{DEFAULT_FROM}"\n\n'
        "[[providers]]\n"
        'name = "sink"\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {sink_port}\ntls = "none"\nmax_connections = 20\n'
    )


# ----------------------------------------------------------------------- results


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


# ------------------------------------------------------------------ orchestrator


class HttpBench(ChildrenBench):
    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        super().__init__(opts, workdir, str(Path(__file__).resolve()))
        self._runs = 0
        self._public_url = ""  # set for the tracking scenario

    async def _mailgate_cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run a short ``mailgate`` command; its stdout, or BenchError with its stderr."""
        proc = await self.children.spawn(
            sys.executable,
            "-m",
            "mailgate.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            await self.children.stop(proc, 5)
            raise BenchError(
                f"mailgate {' '.join(args[:2])}: no answer in {timeout:.0f} s"
            ) from None
        await self.children.stop(proc, 5)
        if proc.returncode != 0:
            raise BenchError(
                f"mailgate {' '.join(args[:2])} exited with {proc.returncode}: "
                + err.decode(errors="replace").strip()
            )
        return out.decode()

    async def start_mailgate(self, sink_port: int) -> Mailgate:
        self._runs += 1
        workdir = self.workdir / f"mailgate-{self._runs}"
        workdir.mkdir()
        config = workdir / "relay.toml"
        config.write_text(relay_toml(workdir, sink_port, "info", self._public_url))
        out = await self._mailgate_cli("keys", "create", "--name", "bench", "--config", str(config))
        lines = out.strip().splitlines()
        if not lines:
            raise BenchError("mailgate keys create printed no key")
        key = lines[-1].strip()
        log = workdir / "mailgate.log"
        proc = await self.spawn_serve(config, log)
        port = await self._wait_listening(proc, log, "HTTP API")
        return Mailgate(proc, port, key, log)

    async def _with_mailgate(
        self, name: str, body: Callable[[Mailgate, Result], Awaitable[None]]
    ) -> Result:
        """Sink + fresh mailgate around one scenario; RSS sampled; both stopped after."""
        res = Result(TITLES[name])
        sink = await self.start_sink()
        mg: Mailgate | None = None
        try:
            mg = await self.start_mailgate(sink.port)
            self._log(f"{name}: mailgate HTTP on {HOST}:{mg.port} -> sink on {HOST}:{sink.port}")
            async with RssSampler(mg.proc.pid) as rss:
                await body(mg, res)
            res.peak_rss = rss.peak
            res.extra["sink_total"] = await sink.count()
        finally:
            if mg is not None:
                res.extra["exit"] = await self.stop_mailgate(mg)
                res.problems = log_problems(mg.log)
            await self.stop_sink(sink)
        return res

    # ---- send

    async def send(self) -> Result:
        return await self._with_mailgate("send", self._send_load("send"))

    async def bare_send(self) -> Result:
        """The reference: the send load against bench_http_bare.py (see there)."""
        res = Result(TITLES["bare-send"])
        log = self.workdir / "bare.log"
        with open(log, "wb") as fh:
            proc = await self.children.spawn(
                sys.executable,
                str(Path(__file__).with_name("bench_http_bare.py")),
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
        procs = [
            await self.children.spawn(
                sys.executable,
                self.script,
                "_client",
                str(mg.port),
                str(n),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for n in self._split(sessions)
        ]
        try:
            ready = [await _read_line(p, "http client", START_TIMEOUT) for p in procs]
            connected = sum(int(line.split()[1]) for line in ready)
            now = time.time()
            start, end = now + opts.warmup, now + opts.warmup + opts.duration
            self._log(f"{kind}: {connected}/{sessions} connections; loading")
            for i, p in enumerate(procs):
                assert p.stdin is not None
                go = {"start": start, "end": end, "key": mg.key, "base": i * 10**11, "kind": kind}
                go.update(extra or {})
                p.stdin.write(b"GO " + json.dumps(go).encode() + b"\n")
                await p.stdin.drain()
            lines = [await _read_line(p, "http client", end - time.time() + 60) for p in procs]
        finally:
            for p in procs:
                await self.children.stop(p, 10.0)
        self._merge(kind, res, lines, end - start, connected, sessions)

    def _merge(
        self,
        kind: str,
        res: Result,
        lines: Sequence[str],
        window: float,
        connected: int,
        sessions: int,
    ) -> None:
        for line in lines:
            if not line.startswith("RESULT "):
                raise BenchError(f"http client said {line[:200]!r}")
            r = json.loads(line[len("RESULT ") :])
            res.errors.update(r["errors"])
            for kind, body in r["samples"].items():
                res.samples.setdefault(kind, body)
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

    # ---- tracking

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
        elapsed = sum(res.latencies_ms) / 1000
        res.rate = sum(queued) / elapsed if elapsed else 0.0
        res.extra.update(queued=queued, all_queued=all(q == BATCH_SIZE for q in queued))

    @staticmethod
    def _batch_queued(res: Result, status: int, answer: bytes) -> int:
        """The answer's ``queued``; a non-202 or a short count is recorded as an error."""
        if status != 202:
            kind = f"HTTP {status}"
            res.errors[kind] += 1
            res.samples.setdefault(kind, answer[:SAMPLE_BYTES].decode(errors="replace"))
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
        if status != 202:
            kind = f"HTTP {status}"
            res.errors[kind] += 1
            res.samples.setdefault(kind, answer[:SAMPLE_BYTES].decode(errors="replace"))
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


# -------------------------------------------------------------------------- report


def print_header(opts: argparse.Namespace) -> None:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    body = SendFactory(SEND_KINDS["send"], 0, "").body_size
    print()
    print("mailgate HTTP API benchmark")
    print(f"  python        {platform.python_version()} ({platform.python_implementation()})")
    print(f"  event loop    uvloop {uvloop.__version__} (clients; mailgate installs it)")
    print(f"  cpus          {cpus} (usable {usable}), {platform.machine()}")
    print(f"  send          {body}-byte JSON body, 1 recipient, keep-alive HTTP/1.1")
    sizes = ", ".join(
        f"{name} {SendFactory(SEND_KINDS[name], 0, '').body_size}"
        for name in ("mailsage-send", "messagepipe-send")
    )
    print(f"  compat sends  same load; body bytes {sizes}")
    print(
        f"  load          {opts.sessions} connections in {opts.client_procs} client "
        f"process(es), warm-up {opts.warmup:g} s, window {opts.duration:g} s; "
        f"{opts.batches} batches of {BATCH_SIZE}; messagepipe-send {opts.pipe_sessions} clients"
    )


def print_table(results: list[Result]) -> None:
    head = (
        f"{'scenario':<38} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>7} {'peak RSS MB':>12}"
    )
    print()
    print(head)
    print("-" * len(head))
    for r in results:
        if r.failed:
            print(f"{r.name:<38} FAILED (see below)")
            continue
        print(
            f"{r.name:<38} {r.rate:>9.0f} {r.percentile(50):>8.2f} {r.percentile(99):>8.2f} "
            f"{r.max_ms:>8.2f} {sum(r.errors.values()):>7} {r.peak_rss / 1e6:>12.1f}"
        )
    print(
        "(sends: latency per request, MessagePipe's including the first delivery attempt; "
        "batches: per request of 1000 messages)"
    )


def print_details(results: list[Result]) -> None:
    for r in results:
        print()
        print(f"{r.name}:")
        if r.failed:
            print("  FAILED: " + r.failed.replace("\n", "\n    "))
            continue
        x = r.extra
        if "accepted" in x:
            print(
                f"  accepted ({x['expect']}) {x['accepted']} in {x['window']:.1f} s "
                f"(total incl. warm-up "
                f"{x['accepted_total']}); connections {x['connected']}/{x['sessions']}; "
                f"{x['body_size']}-byte bodies; client loop {x['loop']}"
            )
        if "queued" in x:
            ms = ", ".join(f"{v:.0f}" for v in r.latencies_ms)
            print(
                f"  {len(x['queued'])} requests ({x['body_size'] / 1e3:.0f} KB each), "
                f"queued per answer {x['queued']}; latencies ms: {ms}"
            )
        if "sink_total" in x:  # not for the bare reference, which delivers nothing
            print(
                f"  sink received {x['sink_total']} messages by the end "
                "(delivery runs alongside; the queue is not drained before stopping)"
            )
        for kind, n in sorted(r.errors.items()):
            print(f"  error: {kind} x{n}; sample body: {r.samples.get(kind, '')!r}")
        if x.get("exit") not in (None, 0):
            print(f"  mailgate exit code: {x['exit']}")
        if r.problems:
            print(f"  mailgate log: {len(r.problems)} warning/error line(s), first ones:")
            for line in r.problems[:5]:
                print(f"    {line[:200]}")


def print_targets(results: list[Result]) -> None:
    by_name = {r.name: r for r in results if not r.failed}
    send, batch = by_name.get(TITLES["send"]), by_name.get(TITLES["batch"])
    print()
    print("targets:")
    if not by_name:
        print("  (no target applies to the scenarios run)")
    if send is not None:
        ok = send.rate >= SEND_TARGET
        print(
            f"  send >= {SEND_TARGET:.0f} msg/s:          {verdict(ok)} ({send.rate:.0f} msg/s, "
            f"{sum(send.errors.values())} errors)"
        )
    bare = by_name.get(TITLES["bare-send"])
    if send is not None and bare is not None and bare.rate:
        ratio = send.rate / bare.rate
        print(
            f"  send >= {SEND_VS_BARE}x bare Starlette+uvicorn: {verdict(ratio >= SEND_VS_BARE)} "
            f"({send.rate:.0f} vs {bare.rate:.0f} req/s = {ratio:.2f}x, same run)"
        )
    if batch is not None:
        ok = batch.max_ms < BATCH_TARGET_MS and batch.extra["all_queued"]
        print(
            f"  batch of {BATCH_SIZE} < {BATCH_TARGET_MS:.0f} ms:     {verdict(ok)} "
            f"(max {batch.max_ms:.0f} ms, p50 {batch.percentile(50):.0f} ms; "
            f"{'all' if batch.extra['all_queued'] else 'NOT all'} queued={BATCH_SIZE})"
        )
    print_compat_targets(by_name, send)
    analyze = by_name.get(TITLES["analyze"])
    if analyze is not None:
        p99 = analyze.percentile(99)
        ok = p99 <= ANALYZE_P99_TARGET_MS and not analyze.errors
        print(
            f"  analyze p99 <= {ANALYZE_P99_TARGET_MS:.0f} ms:     {verdict(ok)} "
            f"(p50 {analyze.percentile(50):.1f} ms, p99 {p99:.1f} ms, {analyze.rate:.0f} req/s, "
            f"{sum(analyze.errors.values())} errors)"
        )
    tracked = by_name.get(TITLES["tracking"])
    if tracked is not None:
        p99 = tracked.percentile(99)
        late = tracked.extra.get("late", 0)
        # A paced run whose slots started late did not offer the rate it was asked for.
        ok = tracked.rate >= TRACKING_TARGET_RATE * 0.99 and p99 < TRACKING_TARGET_P99_MS
        mode = "closed loop" if tracked.extra.get("paced") is None else "paced"
        answered = tracked.extra.get("accepted_total", 0)
        print(
            f"  tracking events: {tracked.extra.get('recorded')} recorded of {answered} "
            "requests answered (warm-up included)"
        )
        print(
            f"  tracking >= {TRACKING_TARGET_RATE:.0f}/s, p99 < {TRACKING_TARGET_P99_MS:.0f} ms: "
            f"{verdict(ok and not late)} ({mode}: {tracked.rate:.0f} req/s, "
            f"p50 {tracked.percentile(50):.1f} ms, p99 {p99:.1f} ms; "
            f"{sum(tracked.errors.values())} errors, {late} late starts)"
        )


def print_compat_targets(by_name: dict[str, Result], send: Result | None) -> None:
    """MailSage send against native send of this run; MessagePipe's wait; MailSage batch."""
    mailsage = by_name.get(TITLES["mailsage-send"])
    pipe = by_name.get(TITLES["messagepipe-send"])
    msbatch = by_name.get(TITLES["mailsage-batch"])
    if mailsage is not None:
        errors = sum(mailsage.errors.values())
        if send is not None and send.rate > 0:
            ratio = mailsage.rate / send.rate
            print(
                f"  mailsage-send >= {COMPAT_RATIO_TARGET:g}x send:   "
                f"{verdict(ratio >= COMPAT_RATIO_TARGET)} ({mailsage.rate:.0f} msg/s = "
                f"{ratio:.2f}x native {send.rate:.0f} msg/s; p50 {mailsage.percentile(50):.1f} ms, "
                f"p99 {mailsage.percentile(99):.1f} ms; {errors} errors)"
            )
        else:
            print(
                f"  mailsage-send >= {COMPAT_RATIO_TARGET:g}x send:   n/a (no native send in "
                f"this run; {mailsage.rate:.0f} msg/s, {errors} errors)"
            )
    if pipe is not None:
        p50 = pipe.percentile(50)
        ok = p50 < MESSAGEPIPE_P50_TARGET_MS and not pipe.errors
        print(
            f"  messagepipe-send p50 < {MESSAGEPIPE_P50_TARGET_MS:.0f} ms: {verdict(ok)} "
            f"(p50 {p50:.1f} ms, p99 {pipe.percentile(99):.1f} ms, {pipe.rate:.0f} msg/s sent; "
            f"{sum(pipe.errors.values())} errors)"
        )
    if msbatch is not None:
        ok = msbatch.max_ms < BATCH_TARGET_MS and msbatch.extra["all_queued"]
        print(
            f"  mailsage-batch of {BATCH_SIZE} < {BATCH_TARGET_MS:.0f} ms: {verdict(ok)} "
            f"(max {msbatch.max_ms:.0f} ms, p50 {msbatch.percentile(50):.0f} ms; "
            f"{'all' if msbatch.extra['all_queued'] else 'NOT all'} "
            f"recipient_count={BATCH_SIZE})"
        )


# ---------------------------------------------------------------------------- main


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
    if argv[:1] == ["_client"]:
        port, sessions = (int(a) for a in argv[1:3])
        uvloop.install()
        asyncio.run(client_main(port, sessions))
        return 0
    opts = parse_args(argv)
    print_header(opts)
    results = run_in_tempdir(
        lambda workdir: HttpBench(opts, workdir),
        opts.scenarios,
        prefix="mailgate-bench-http-",
        keep_tmp=opts.keep_tmp,
    )
    if isinstance(results, int):
        return results
    print_table(results)
    print_details(results)
    print_targets(results)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

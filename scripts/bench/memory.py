"""The memory scenarios of bench-smtp: what big messages cost in RSS, over all of
mailgate's processes (the relay, the queue writer, the delivery process and its children).

* ``memory``: ``--mem-messages`` (20) concurrent SMTP messages of ``--mem-size`` (20 MB,
  base64 lines like a PDF attachment, ``SIZE=`` declared at MAIL) into a relay that
  delivers them to the counting sink.
* ``memory-http``: the same relay, ``--mem-http-messages`` (1) concurrent
  ``POST /v1/messages/send`` carrying a ``--mem-http-size`` (9 MB) attachment each.

RSS is sampled every 50 ms per process (psutil, children recursive) from a settled
baseline, through the burst until the sink has every accepted message, and for
``--mem-settle`` (30 s) after that. Amplification = peak growth of the sum over all
processes / the message bytes in flight (the messages' sizes, accepted or not: all of them
were sent at once). The issue's targets: at most 3x, and every process back within
+50 MB of its baseline at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import HOST
from bench.config import free_port, memory_relay_toml
from bench.orchestrator import ChildrenBench
from bench.processes import CHILD_ROLES, BenchError
from bench.smtp_results import TITLES, Scenario

SAMPLE_EVERY = 0.05
SETTLE_BEFORE = 3.0  # s after start before the baseline is read
RETURN_MARGIN = 50_000_000  # each process back within this of its baseline
TARGET_AMPLIFICATION = 3.0
DELIVER_TIMEOUT = 300.0


def add_arguments(p: Any) -> None:
    p.add_argument("--mem-messages", type=int, default=20, help="memory: concurrent messages")
    p.add_argument("--mem-size", type=int, default=20_000_000, help="memory: message bytes")
    p.add_argument(
        "--mem-http-messages", type=int, default=1, help="memory-http: concurrent requests"
    )
    p.add_argument(
        "--mem-http-size", type=int, default=9_000_000, help="memory-http: attachment bytes"
    )
    p.add_argument("--mem-settle", type=float, default=30.0, help="memory: s watched after")
    p.add_argument(
        "--mem-inflight", default="", help="memory: [server] max_inflight_bytes (default: its)"
    )


# ------------------------------------------------------------------------ sampling


def _role(proc: psutil.Process, main_pid: int) -> str:
    if proc.pid == main_pid:
        return "relay"
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(proc.cmdline())
        for module, role in CHILD_ROLES:
            if module in cmd:
                return role
    return f"child-{proc.pid}"


@dataclass
class Tree:
    """RSS per role (relay, writer, delivery, ...) of mailgate's process tree."""

    main_pid: int
    baseline: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    _task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            main = psutil.Process(self.main_pid)
            procs = [main, *main.children(recursive=True)]
        except psutil.Error:
            return self.last
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                role = _role(proc, self.main_pid)
                out[role] = out.get(role, 0) + proc.memory_info().rss
        self.last = out
        for role, rss in out.items():
            self.peak[role] = max(self.peak.get(role, 0), rss)
        self.peak_total = max(self.peak_total, sum(out.values()))
        return out

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    def start(self) -> None:
        self.baseline = dict(self.sample())
        self.peak = dict(self.baseline)
        self.peak_total = sum(self.baseline.values())
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


# ------------------------------------------------------------------------ messages


def smtp_message(n: int, size: int) -> bytes:
    """A message of about ``size`` bytes: headers and a base64 "attachment" (76-char lines)."""
    head = (
        f"From: bench@example.com\r\nTo: rcpt{n}@example.net\r\nSubject: memory {n}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    seed = hashlib.sha256(str(n).encode()).digest()
    raw = (seed * ((size * 3 // 4) // len(seed) + 1))[: (size - len(head)) * 57 // 78]
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return head + body


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    while True:
        line = await asyncio.wait_for(reader.readline(), 600)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def send_smtp(port: int, data: bytes, n: int) -> tuple[int, str]:
    """One transaction with SIZE=; (code, reply) of the first refusal or of the DATA."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await _reply(reader)
        for cmd in (
            b"EHLO bench.test\r\n",
            f"MAIL FROM:<bench@example.com> SIZE={len(data)}\r\n".encode(),
            f"RCPT TO:<rcpt{n}@example.net>\r\n".encode(),
            b"DATA\r\n",
        ):
            writer.write(cmd)
            code, text = await _reply(reader)
            if code >= 400:
                return code, text
        writer.write(data)
        writer.write(b".\r\n")
        await writer.drain()
        code, text = await _reply(reader)
        writer.write(b"QUIT\r\n")
        return code, text
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def http_body(n: int, size: int) -> bytes:
    seed = hashlib.sha256(f"http{n}".encode()).digest()
    content = base64.b64encode((seed * (size // len(seed) + 1))[:size]).decode()
    return json.dumps(
        {
            "from": "bench@example.com",
            "to": [f"rcpt{n}@example.net"],
            "subject": f"attachment {n}",
            "text": "The invoice is attached.",
            "attachments": [
                {"filename": "invoice.pdf", "content": content, "content_type": "application/pdf"}
            ],
        }
    ).encode()


async def send_http(port: int, key: str, body: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        head = (
            f"POST /v1/messages/send HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(head)
        writer.write(body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 600)
        rest = await asyncio.wait_for(reader.read(), 600)
        return int(status.split()[1]), rest[-200:].decode(errors="replace")
    finally:
        writer.close()


# ------------------------------------------------------------------------ the relay


async def _wait_for(pred: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.1)
    return False


async def memory(bench: ChildrenBench) -> Scenario:
    return await _scenario(bench, http=False)


async def memory_http(bench: ChildrenBench) -> Scenario:
    return await _scenario(bench, http=True)


async def _scenario(bench: ChildrenBench, *, http: bool) -> Scenario:
    sc = Scenario(TITLES["memory-http" if http else "memory"])
    try:
        sc.extra = await run_memory(bench, http=http)
    except (RuntimeError, OSError) as exc:
        raise BenchError(str(exc)) from exc
    sc.peak_rss = sc.extra["peak_total"]
    return sc


async def run_memory(bench: ChildrenBench, *, http: bool) -> dict[str, Any]:
    """One memory scenario; the figures for :func:`print_memory`."""
    opts = bench.opts
    name = f"memory-{'http' if http else 'smtp'}"
    workdir, n = bench.workdir / name, 1
    while workdir.exists():  # --rounds: one folder per run
        n += 1
        workdir = bench.workdir / f"{name}-{n}"
    workdir.mkdir()
    sink = await bench.start_sink()
    smtp_port, http_port = free_port(), free_port()
    config = workdir / "relay.toml"
    config.write_text(
        memory_relay_toml(workdir, sink.port, smtp_port, http_port, opts.mem_inflight)
    )
    key = await bench.create_key(config) if http else ""
    log = workdir / "mailgate.log"
    proc = await bench.spawn_serve(config, log)
    x: dict[str, Any] = {"http": http}
    try:
        await bench._wait_connectable(proc, log, smtp_port)
        await asyncio.sleep(SETTLE_BEFORE)
        tree = Tree(proc.pid)
        if http:
            count, size = opts.mem_http_messages, opts.mem_http_size
            bodies = [http_body(n, size) for n in range(count)]
            inflight = sum(len(b) for b in bodies)
            x["attachment_bytes"] = count * size
            sends = [send_http(http_port, key, b) for b in bodies]
        else:
            count, size = opts.mem_messages, opts.mem_size
            msgs = [smtp_message(n, size) for n in range(count)]
            inflight = sum(len(m) for m in msgs)
            sends = [send_smtp(smtp_port, m, n) for n, m in enumerate(msgs)]
        bench._log(
            f"memory: {count} x {inflight / count / 1e6:.1f} MB {'HTTP' if http else 'SMTP'}"
        )
        tree.start()
        started = time.monotonic()
        answers = await asyncio.gather(*sends, return_exceptions=True)
        x["accept_seconds"] = time.monotonic() - started
        ok = [a for a in answers if isinstance(a, tuple) and a[0] in (250, 202)]
        x["answers"] = sorted({str(a[0]) if isinstance(a, tuple) else repr(a) for a in answers})
        x["accepted"], x["sent"], x["inflight"] = len(ok), count, inflight
        del sends, answers
        if http:
            del bodies
        else:
            del msgs

        async def delivered() -> bool:
            return await sink.count() >= len(ok)

        x["delivered_all"] = await _wait_for(delivered, DELIVER_TIMEOUT)
        x["delivered"] = await sink.count()
        x["deliver_seconds"] = time.monotonic() - started
        x["peak_total"] = tree.peak_total
        x["peak"] = dict(tree.peak)
        await asyncio.sleep(opts.mem_settle)
        await tree.stop()
        x["baseline"], x["after"] = tree.baseline, tree.last
        x["growth"] = tree.peak_total - sum(tree.baseline.values())
        x["amplification"] = x["growth"] / inflight if inflight else 0.0
        x["cap"] = _cap_of(log)
    finally:
        await bench.children.stop(proc, 40.0)
        await bench.stop_sink(sink)
    return x


def _cap_of(log: Path) -> int:
    """max_inflight_bytes as mailgate reports it at start (0 if it did not say)."""
    m = re.search(r"in-flight message bytes capped at (\d+)", log.read_text(errors="replace"))
    return int(m[1]) if m else 0


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f}"


def print_memory(x: dict[str, Any]) -> None:
    what = "HTTP sends" if x["http"] else "SMTP messages"
    print(
        f"  {x['sent']} concurrent {what}, {_mb(x['inflight'])} MB in flight; answers "
        f"{x['answers']}; accepted {x['accepted']} in {x['accept_seconds']:.1f} s; "
        f"sink got {x['delivered']} ({x['deliver_seconds']:.1f} s)"
    )
    base, peak, after = x["baseline"], x["peak"], x["after"]
    for role in sorted(base, key=lambda r: -peak.get(r, 0)):
        grown = after.get(role, 0) - base[role]
        print(
            f"    {role:<10} baseline {_mb(base[role]):>5} MB  peak {_mb(peak.get(role, 0)):>5} MB"
            f"  after {_mb(after.get(role, 0)):>5} MB ({grown / 1e6:+.0f})"
            + ("  NOT back within +50 MB" if grown > RETURN_MARGIN else "")
        )
    total = sum(base.values())
    print(
        f"    all        baseline {_mb(total):>5} MB  peak {_mb(x['peak_total']):>5} MB"
        f"  after {_mb(sum(after.values())):>5} MB;  peak growth {_mb(x['growth'])} MB = "
        f"{x['amplification']:.2f}x the bytes in flight (target <= {TARGET_AMPLIFICATION:g}x)"
    )
    if x.get("cap"):
        ratio = x["growth"] / x["cap"]
        print(
            f"    max_inflight_bytes {_mb(x['cap'])} MB: peak growth = {ratio:.2f}x the cap "
            f"(target <= {TARGET_AMPLIFICATION:g}x)"
        )
    if "attachment_bytes" in x:
        print(f"    ({x['growth'] / x['attachment_bytes']:.2f}x the decoded attachment bytes)")

"""The HTTP load client, a child process of the orchestrator:
``python -m bench.http_client PORT SESSIONS``.

Raw asyncio streams on uvloop rather than httpx: it must not be the bottleneck on a small
machine. It writes prebuilt request bytes (http_requests.py, http_tracking.py) and reads
only the status line, the headers and a Content-Length body.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import uvloop

from bench import REPLY_TIMEOUT
from bench.control import Connection, Plan, ready_then_go, say_result
from bench.http_requests import SAMPLE_BYTES, SEND_KINDS, SendFactory
from bench.http_tracking import TrackingFactory


class ProtocolError(Exception):
    """The server said something this small client does not handle."""


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


@dataclass
class ClientStats:
    accepted: int = 0  # the kind's success status inside the window
    accepted_total: int = 0
    latencies_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # one body per kind of error
    connects: int = 0


class HttpSession(Connection):
    """One keep-alive connection posting sends, one at a time, until the plan ends."""

    def __init__(self, port: int, stats: ClientStats) -> None:
        super().__init__(port)
        self._stats = stats

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await self._open()
        except (OSError, TimeoutError) as exc:
            self._stats.errors[f"connect: {type(exc).__name__}"] += 1
            return False
        self._stats.connects += 1
        return True

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
    stats = ClientStats()
    clients = [HttpSession(port, stats) for _ in range(sessions)]
    await asyncio.gather(*(c.connect() for c in clients))
    go = await ready_then_go(sum(c.connected for c in clients))
    if go is None:
        return
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
    say_result(
        {
            "accepted": stats.accepted,
            "accepted_total": stats.accepted_total,
            "latencies_us": stats.latencies_us,
            "errors": dict(stats.errors),
            "samples": stats.samples,
            "connects": stats.connects,
            "late": plan.late,
        }
    )


if __name__ == "__main__":
    port, sessions = (int(a) for a in sys.argv[1:3])
    uvloop.install()
    asyncio.run(client_main(port, sessions))

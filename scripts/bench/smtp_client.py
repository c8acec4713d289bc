"""The SMTP load client, a child process of the orchestrator:
``python -m bench.smtp_client PORT SESSIONS SIZE track|-``.

It must not be the bottleneck, so it is raw asyncio streams on uvloop in its own
process(es), one command and one reply at a time (no pipelining, like most real submission
clients); every reply has a timeout. With ``track`` it notes (queue id, monotonic time) of
every 250 in the window, for the 250->delivered latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import uvloop

from bench import REPLY_TIMEOUT
from bench.control import Connection, Plan, ready_then_go, say_result
from bench.message import MessageFactory

SENDER = "bench@example.com"
RECIPIENT = "rcpt@example.net"


class ProtocolError(Exception):
    """The server said something that is not an SMTP reply."""


async def read_reply_line(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one (possibly multi-line, '250-...' then '250 ...') reply; return its code and
    last line (the 250 after DATA carries the queue id there)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("server closed the connection")
        if line[3:4] != b"-":
            try:
                return int(line[:3]), line
            except ValueError:
                raise ProtocolError(f"bad reply line {line[:80]!r}") from None


async def read_reply(reader: asyncio.StreamReader) -> int:
    """The code of one reply."""
    return (await read_reply_line(reader))[0]


_QUEUED_AS = re.compile(rb"queued as (\S+)")


@dataclass
class ClientStats:
    accepted: int = 0  # 250 after end of data, reply inside the window
    accepted_total: int = 0
    latencies_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    last_accept: float = 0.0
    # (queue id, time.monotonic() of the 250) for messages accepted in the window; only
    # when tracking, to match against the sink's arrival times.
    acks: list[tuple[str, float]] = field(default_factory=list)


class ClientSession(Connection):
    """One SMTP session: connect and EHLO once, then MAIL/RCPT/DATA until the plan ends."""

    def __init__(
        self, port: int, factory: MessageFactory, stats: ClientStats, track: bool = False
    ) -> None:
        super().__init__(port)
        self._factory = factory
        self._stats = stats
        self._track = track
        self._seq = 0

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await self._open()
                assert self._reader is not None and self._writer is not None
                if await read_reply(self._reader) != 220:
                    raise ProtocolError("no 220 greeting")
                self._writer.write(b"EHLO bench-client.example.com\r\n")
                if await read_reply(self._reader) != 250:
                    raise ProtocolError("EHLO refused")
        except (OSError, TimeoutError, ProtocolError) as exc:
            self._stats.errors[f"connect: {type(exc).__name__}"] += 1
            self._drop()
            return False
        self._stats.connects += 1
        return True

    async def _command(self, line: bytes) -> int:
        assert self._reader is not None and self._writer is not None
        self._writer.write(line)
        return await read_reply(self._reader)

    async def _refused(self, stage: str, code: int) -> None:
        """Count a non-2xx reply; reset the transaction, or reconnect after a 421."""
        self._stats.errors[f"{stage} {code}"] += 1
        if code == 421:
            self._drop()
            return
        if await self._command(b"RSET\r\n") != 250:
            self._drop()

    async def _transaction(self, plan: Plan) -> bool:
        """One message; True if the server accepted it."""
        code = await self._command(b"MAIL FROM:<" + SENDER.encode() + b">\r\n")
        if code // 100 != 2:
            await self._refused("MAIL", code)
            return False
        code = await self._command(b"RCPT TO:<" + RECIPIENT.encode() + b">\r\n")
        if code // 100 != 2:
            await self._refused("RCPT", code)
            return False
        code = await self._command(b"DATA\r\n")
        if code != 354:
            await self._refused("DATA", code)
            return False
        self._seq += 1
        message = self._factory.make(self._seq)
        assert self._reader is not None and self._writer is not None
        t0 = time.perf_counter()
        self._writer.write(message)
        code, line = await read_reply_line(self._reader)
        elapsed = time.perf_counter() - t0
        acked = time.monotonic()
        if code // 100 != 2:
            self._stats.errors[f"end-of-data {code}"] += 1
            return False
        now = time.time()
        self._stats.accepted_total += 1
        self._stats.last_accept = now
        if plan.start <= now < plan.end:
            self._stats.accepted += 1
            self._stats.latencies_us.append(int(elapsed * 1e6))
            if self._track:
                self._note_ack(line, acked)
        return True

    def _note_ack(self, line: bytes, acked: float) -> None:
        """Keep (queue id, when the 250 arrived); a 250 without an id is counted instead."""
        m = _QUEUED_AS.search(line)
        if m is None:
            self._stats.errors["250 without 'queued as <id>'"] += 1
            return
        self._stats.acks.append((m.group(1).decode(), acked))

    async def run(self, plan: Plan) -> None:
        while plan.take():
            await plan.pace()
            ok = False
            if self.connected or await self.connect():
                try:
                    async with asyncio.timeout(REPLY_TIMEOUT):
                        ok = await self._transaction(plan)
                except (OSError, TimeoutError, ProtocolError) as exc:
                    self._stats.errors[f"session: {type(exc).__name__}"] += 1
                    self._drop()
            if not ok:
                plan.give_back()
                if plan.rate is None:
                    await asyncio.sleep(0.01)  # no hot loop against a refusing server
        await self.quit()

    async def quit(self) -> None:
        if self._writer is None:
            return
        with contextlib.suppress(OSError, TimeoutError, ProtocolError):
            async with asyncio.timeout(5):
                await self._command(b"QUIT\r\n")
        self._drop()


async def client_main(port: int, sessions: int, size: int, track: bool = False) -> None:
    """Connect all sessions, say READY, wait for GO {start,end,quota}, run, print RESULT."""
    stats = ClientStats()
    factory = MessageFactory(size)
    clients = [ClientSession(port, factory, stats, track) for _ in range(sessions)]
    await asyncio.gather(*(c.connect() for c in clients))
    go = await ready_then_go(sum(c.connected for c in clients))
    if go is None:
        return
    plan = Plan(
        start=go["start"],
        end=go["end"],
        quota=go.get("quota"),
        rate=go.get("rate"),
        paced_from=time.time(),
    )
    await asyncio.gather(*(c.run(plan) for c in clients))
    say_result(
        {
            "accepted": stats.accepted,
            "accepted_total": stats.accepted_total,
            "last_accept": stats.last_accept,
            "latencies_us": stats.latencies_us,
            "errors": dict(stats.errors),
            "connects": stats.connects,
            "late": plan.late,
            "acks": [[qid, round(t, 6)] for qid, t in stats.acks],
        }
    )


if __name__ == "__main__":
    port, sessions, size = (int(a) for a in sys.argv[1:4])
    uvloop.install()
    asyncio.run(client_main(port, sessions, size, track=sys.argv[4:5] == ["track"]))

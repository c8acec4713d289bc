"""A small SMTP load for the multi-node stories: client threads submitting to a set of
relays, recording every acknowledged (250) queue id and every temporary refusal. And the
helpers those stories share: waiting on a condition, a query on the PostgreSQL queue."""

from __future__ import annotations

import asyncio
import itertools
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

MSG = "From: app@example.com\r\nTo: {rcpt}\r\nSubject: load {n}\r\n\r\nmessage {n}\r\n"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pg_query(url: str, sql: str, *args: Any) -> list[Any]:
    """Rows of ``sql`` on the database at ``url`` (asyncpg, a connection of its own)."""
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


class SmtpLoad:
    """``clients`` threads, each on a connection to one of ``ports()`` (round robin), send
    one message after another until stop(); a failed connection moves to the next port."""

    def __init__(self, ports: Callable[[], list[int]], clients: int = 6) -> None:
        self._ports = ports
        self.acked: dict[str, int] = {}  # queue id -> message number
        self.replies: Counter[int] = Counter()  # SMTP code of each end of DATA (0: no reply)
        self.lock = threading.Lock()
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> SmtpLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _client(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            ports = self._ports()
            port = ports[turn % len(ports)]
            turn += 1
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                    c.ehlo("client.test")
                    while not self._stop.is_set():
                        self._one(c)
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.replies[0] += 1  # no promise was made: a client would retry
                self._stop.wait(0.05)

    def _one(self, c: smtplib.SMTP) -> None:
        with self.lock:
            n = next(self._numbers)
        rcpt = f"r{n}@dest.test"
        try:
            code, _ = c.mail("app@example.com")
            if code == 250:
                code, _ = c.rcpt(rcpt)
            if code != 250:
                c.rset()
                reply = b""
            else:
                code, reply = c.data(MSG.format(rcpt=rcpt, n=n).encode())
        except smtplib.SMTPResponseException as exc:  # DATA refused before 354
            code, reply = exc.smtp_code, b""
            c.rset()
        with self.lock:
            self.replies[code] += 1
            if code == 250:
                self.acked[reply.decode().rsplit(" ", 1)[1]] = n

"""Maildir capture: each delivered recipient becomes one file, for development and staging.

Written the Maildir way (tmp/, fsync, rename into new/) so a reader never sees half a
message and a crash never leaves a partial file in new/.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path

from mailgate.models import AttemptResult, Outcome, SmtpReply

_counter = count()


class MaildirTransport:
    direct = False  # a file for a person or a test to read: "sent", not "delivered"

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def _ensure(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def _write(self, sender: str, recipients: Sequence[str], data: bytes) -> list[str]:
        self._ensure()
        names = []
        for rcpt in recipients:
            now = time.time()
            unique = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{self._host}"
            header = f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n".encode(
                "utf-8", "replace"
            )
            tmp = self.path / "tmp" / unique
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, header)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path / "new" / unique)
            names.append(unique)
        dir_fd = os.open(self.path / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return names

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        """Write one file per recipient. ``gate`` is not asked (there is no connection to
        wait for, so no time for the breaker to open) and there is no TLS."""
        try:
            names = await asyncio.to_thread(self._write, sender, recipients, data)
        except OSError as exc:
            reply = SmtpReply(451, "4.3.0", f"maildir write failed: {exc.strerror}")
            return [AttemptResult(Outcome.TEMPORARY, reply, self.name) for _ in recipients]
        return [
            AttemptResult(Outcome.SENT, SmtpReply(250, "2.0.0", f"saved as {n}"), self.name)
            for n in names
        ]

    async def close(self) -> None:
        return None

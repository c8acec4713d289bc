"""SMTP to an upstream provider (smarthost), with pooled connections.

Connections are reused across messages (at most ``max_connections``) and closed after
``idle_timeout``. All recipients of one message go in one transaction (see session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiosmtplib

from mailgate.config_sending import ProviderSettings
from mailgate.models import SKIPPED, AttemptResult, Outcome, SmtpReply
from mailgate.transports.session import (
    Endpoint,
    StageError,
    Timeouts,
    connect,
    quit_quietly,
    transaction,
)

log = logging.getLogger(__name__)


class SmtpTransport:
    direct = False  # accepted means "sent" (to a provider), not "delivered"

    def __init__(self, settings: ProviderSettings, *, local_hostname: str) -> None:
        self.name = settings.name
        self.settings = settings
        self._local_hostname = local_hostname
        self._sem = asyncio.Semaphore(settings.max_connections)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        s = settings
        self._timeouts = Timeouts(s.connect_timeout, s.command_timeout, s.data_timeout)

    def connections_in_use(self) -> int:
        """Connections carrying a transaction now (the admin API's provider status)."""
        return self.settings.max_connections - self._sem._value

    def _endpoint(self) -> Endpoint:
        # Built per connection: a password read from the environment may be rotated.
        s = self.settings
        return Endpoint(
            address=s.host,
            port=s.resolved_port(),
            name=s.host,
            tls=s.tls,
            verify=s.tls_verify,
            ca_file=str(s.ca_file) if s.ca_file else None,
            username=s.username,
            password=s.resolved_password(),
        )

    async def _acquire(self, fresh: bool = False) -> tuple[aiosmtplib.SMTP, bool]:
        """A pooled connection (reused: True) or a new one; ``fresh``: a new one."""
        while self._idle and not fresh:
            client, _since = self._idle.pop()
            if client.is_connected:
                return client, True
            client.close()
        return await connect(self._endpoint(), self._local_hostname, self._timeouts), False

    def _release(self, client: aiosmtplib.SMTP, healthy: bool) -> None:
        if healthy and client.is_connected and not self._closed:
            self._idle.append((client, time.monotonic()))
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.create_task(self._reap(), name=f"smtp-reaper-{self.name}")
        else:
            client.close()

    async def _reap(self) -> None:
        """Close connections idle for longer than idle_timeout (QUIT, then close)."""
        while self._idle:
            await asyncio.sleep(max(0.5, self.settings.idle_timeout / 4))
            cutoff = time.monotonic() - self.settings.idle_timeout
            stale = [c for c, since in self._idle if since < cutoff]
            self._idle = [(c, since) for c, since in self._idle if since >= cutoff]
            for client in stale:
                await quit_quietly(client)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(quit_quietly(c) for c, _ in idle), return_exceptions=True)

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        """``gate`` is asked again once a connection slot is free: a delivery that waited
        while the provider's breaker opened gives up at once instead of timing out.
        ``tls_policy`` is not used: the provider's own TLS settings say how to reach it."""
        async with self._sem:
            if gate is not None and not gate():
                reply = SmtpReply(451, "4.4.1", f"{self.name} skipped: circuit breaker open")
                return [
                    AttemptResult(Outcome.TEMPORARY, reply, self.name, SKIPPED) for _ in recipients
                ]
            # A pooled connection the server had closed is tried again on a new one, never on
            # another pooled one: the server may have closed them all (a restart).
            for fresh in (False, True):
                try:
                    client, reused = await self._acquire(fresh)
                except StageError as exc:
                    log.info("provider %s: %s failed: %s", self.name, exc.stage, exc.reply)
                    return exc.results(self.name, len(recipients))
                try:
                    results = await transaction(
                        client,
                        sender,
                        recipients,
                        data,
                        provider=self.name,
                        timeouts=self._timeouts,
                        reused=reused,
                        chunking=self.settings.chunking,
                    )
                except StageError as exc:
                    self._release(client, healthy=False)
                    if exc.retry_fresh and not fresh:
                        continue  # a pooled connection the server had closed: use a new one
                    log.info("provider %s: %s failed: %s", self.name, exc.stage, exc.reply)
                    return exc.results(self.name, len(recipients))
                except asyncio.CancelledError:
                    self._release(client, healthy=False)
                    raise
                self._release(client, healthy=True)
                return results
        raise AssertionError("the second try returns")

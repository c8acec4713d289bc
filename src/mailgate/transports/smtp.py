"""SMTP to an upstream provider (smarthost) with aiosmtplib: every outbound conversation.

Connections are pooled per provider (at most ``max_connections``), reused across messages
and closed after ``idle_timeout``. Every step has its own timeout; the end of DATA gets the
10 minutes RFC 5321 allows. All recipients of one message go in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailgate.config import ProviderSettings
from mailgate.delivery.classify import classify, connection_reply, parse_reply
from mailgate.models import AttemptResult, Outcome, SmtpReply

log = logging.getLogger(__name__)


class _StageError(Exception):
    """A failure before any recipient was addressed; applies to the whole transaction."""

    def __init__(self, stage: str, reply: SmtpReply, *, retry_fresh: bool = False) -> None:
        super().__init__(reply.line())
        self.stage = stage
        self.reply = reply
        self.retry_fresh = retry_fresh


def _reply_of(exc: BaseException) -> SmtpReply:
    if isinstance(exc, SMTPResponseException):
        return parse_reply(exc.code, exc.message)
    if isinstance(exc, SMTPTimeoutError | asyncio.TimeoutError):
        return connection_reply("timeout", f"timeout: {exc}".strip(": "))
    if isinstance(exc, ssl.SSLError):
        return connection_reply("tls", f"TLS failure: {exc}")
    if isinstance(exc, SMTPServerDisconnected):
        return connection_reply("dropped", f"connection lost: {exc}")
    if isinstance(exc, SMTPConnectError | ConnectionError | OSError):
        return connection_reply("refused", f"cannot connect: {exc}")
    return connection_reply("internal", f"{type(exc).__name__}: {exc}")


class SmtpTransport:
    def __init__(self, settings: ProviderSettings, *, local_hostname: str) -> None:
        self.name = settings.name
        self.settings = settings
        self._local_hostname = local_hostname
        self._sem = asyncio.Semaphore(settings.max_connections)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ connections

    def _tls_context(self) -> ssl.SSLContext:
        ca = self.settings.ca_file
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if not self.settings.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.resolved_port(),
            local_hostname=self._local_hostname,
            timeout=s.connect_timeout,
            use_tls=s.tls == "implicit",
            start_tls=False,
            tls_context=self._tls_context() if s.tls != "none" else None,
            validate_certs=s.tls_verify,
        )
        stage = "connect"
        try:
            await client.connect()
            stage = "ehlo"
            await client.ehlo(timeout=s.command_timeout)
            stage = "starttls"
            if s.tls == "starttls":
                if not client.supports_extension("starttls"):
                    raise _StageError(
                        "starttls",
                        SmtpReply(
                            451, "4.7.4", f"{s.host} does not offer STARTTLS (tls = starttls)"
                        ),
                    )
                await client.starttls(timeout=s.command_timeout)
                await client.ehlo(timeout=s.command_timeout)
            stage = "auth"
            if s.username:
                await client.login(s.username, s.resolved_password(), timeout=s.command_timeout)
        except _StageError:
            client.close()
            raise
        except SMTPAuthenticationError as exc:
            client.close()
            raise _StageError("auth", _reply_of(exc)) from exc
        except (TimeoutError, SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise _StageError(stage, _reply_of(exc)) from exc
        return client

    async def _acquire(self) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle:
            client, _since = self._idle.pop()
            if client.is_connected:
                return client, True
            client.close()
        return await self._connect(), False

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
                await self._quit(client)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=2)
        except (TimeoutError, SMTPException, OSError):
            client.close()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c, _ in idle), return_exceptions=True)

    # ------------------------------------------------------------- delivering

    async def deliver(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> list[AttemptResult]:
        async with self._sem:
            for _ in range(2):
                try:
                    client, reused = await self._acquire()
                except _StageError as exc:
                    return self._all(exc.stage, exc.reply, len(recipients))
                try:
                    results = await self._transaction(client, sender, recipients, data, reused)
                except _StageError as exc:
                    self._release(client, healthy=False)
                    if exc.retry_fresh:
                        continue  # a pooled connection the server had closed: use a new one
                    return self._all(exc.stage, exc.reply, len(recipients))
                except asyncio.CancelledError:
                    self._release(client, healthy=False)
                    raise
                self._release(client, healthy=True)
                return results
        raise AssertionError("unreachable")

    def _all(self, stage: str, reply: SmtpReply, n: int) -> list[AttemptResult]:
        outcome = classify(stage, reply)
        log.info("provider %s: %s failed: %s", self.name, stage, reply)
        return [AttemptResult(outcome, reply, self.name) for _ in range(n)]

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        reused: bool,
    ) -> list[AttemptResult]:
        s = self.settings
        options: list[str] = []
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
        if utf8:
            if not client.supports_extension("smtputf8"):
                reply = SmtpReply(553, "5.6.7", "upstream does not support SMTPUTF8 addresses")
                raise _StageError("mail", reply)
            options.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await client.mail(sender, options=options, encoding=encoding, timeout=s.command_timeout)
        except SMTPResponseException as exc:
            await self._rset(client)
            raise _StageError("mail", _reply_of(exc)) from exc
        except (TimeoutError, SMTPException, OSError) as exc:
            raise _StageError("mail", _reply_of(exc), retry_fresh=reused) from exc

        results: list[AttemptResult | None] = [None] * len(recipients)
        accepted: list[int] = []
        for i, rcpt in enumerate(recipients):
            try:
                await client.rcpt(rcpt, encoding=encoding, timeout=s.command_timeout)
                accepted.append(i)
            except SMTPResponseException as exc:
                reply = _reply_of(exc)
                results[i] = AttemptResult(classify("rcpt", reply), reply, self.name)
            except (TimeoutError, SMTPException, OSError) as exc:
                raise _StageError("rcpt", _reply_of(exc)) from exc
        if not accepted:
            await self._rset(client)
            return [r for r in results if r is not None]
        try:
            response = await client.data(data, timeout=s.data_timeout)
            reply = parse_reply(response.code, response.message)
            outcome = Outcome.SENT
        except SMTPResponseException as exc:
            reply = _reply_of(exc)
            # A 2xx/3xx here is a protocol violation (e.g. 250 instead of 354): the body
            # was never sent, so it cannot count as delivered.
            outcome = classify("data", reply) if reply.code >= 400 else Outcome.TEMPORARY
            await self._rset(client)
        except (TimeoutError, SMTPException, OSError) as exc:
            # Lost after DATA: the upstream may or may not have taken it. Retrying may
            # duplicate; not retrying may lose it. Delivery is at-least-once: retry.
            raise _StageError("data", _reply_of(exc)) from exc
        for i in accepted:
            results[i] = AttemptResult(outcome, reply, self.name)
        return [r for r in results if r is not None]

    @staticmethod
    async def _rset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset(timeout=30)
        except (TimeoutError, SMTPException, OSError):
            client.close()

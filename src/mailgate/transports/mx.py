"""Direct delivery to the recipients' own mail servers (``kind = "mx"``).

Recipients are grouped by domain; each domain's MX hosts are tried in preference order
(next host on a connection failure, a TLS failure or a 4xx before any recipient was
addressed). STARTTLS is used when offered (``tls_policy = "require"``: mandatory, with a
verified certificate). At most ``max_connections_per_domain`` at once per domain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from mailgate.config_sending import ProviderSettings
from mailgate.delivery.classify import classify
from mailgate.models import AttemptResult, Outcome, SmtpReply
from mailgate.routing.resolver import MxResolver
from mailgate.transports.session import (
    Endpoint,
    StageError,
    Timeouts,
    connect,
    quit_quietly,
    transaction,
)

log = logging.getLogger(__name__)


class MxTransport:
    direct = True  # accepted means "delivered" (by the recipient's own server)

    def __init__(
        self, settings: ProviderSettings, *, local_hostname: str, resolver: MxResolver
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._local_hostname = local_hostname
        self._resolver = resolver
        self._timeouts = Timeouts(
            settings.connect_timeout, settings.command_timeout, settings.data_timeout
        )
        self._per_domain: dict[str, asyncio.Semaphore] = {}
        self._total = asyncio.Semaphore(settings.max_connections)

    def connections_in_use(self) -> int:
        """Connections to MX hosts open now (the admin API's provider status)."""
        return self.settings.max_connections - self._total._value

    async def close(self) -> None:
        return None

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        """Per recipient domain, with ``tls_policy`` (the route's) or the provider's own.
        ``gate`` is not asked: an MX route has no circuit breaker (one domain's servers
        failing says nothing about the next domain's)."""
        by_domain: dict[str, list[int]] = {}
        for i, rcpt in enumerate(recipients):
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(i)
        results: list[AttemptResult | None] = [None] * len(recipients)
        policy = tls_policy or self.settings.tls_policy

        async def one(domain: str, indexes: list[int]) -> None:
            got = await self._deliver_domain(
                domain, sender, [recipients[i] for i in indexes], data, policy
            )
            for i, r in zip(indexes, got, strict=True):
                results[i] = r

        await asyncio.gather(*(one(d, idx) for d, idx in by_domain.items()))
        return [r for r in results if r is not None]

    async def _deliver_domain(
        self, domain: str, sender: str, rcpts: list[str], data: bytes, policy: str
    ) -> list[AttemptResult]:
        found = await self._resolver.resolve(domain)
        if found.error is not None:
            outcome = Outcome.PERMANENT if found.permanent else Outcome.TEMPORARY
            log.info("mx %s: %s", domain, found.error)
            return [AttemptResult(outcome, found.error, self.name, "dns") for _ in rcpts]
        sem = self._per_domain.setdefault(
            domain, asyncio.Semaphore(self.settings.max_connections_per_domain)
        )
        last = SmtpReply(451, "4.4.1", f"no mail server of {domain} could be reached")
        last_stage = "connect"
        async with sem, self._total:
            for host in found.hosts:
                for address in host.addresses:
                    endpoint = Endpoint(
                        address=address,
                        port=self.settings.resolved_port(),
                        name=host.name,
                        tls="starttls" if policy == "require" else "opportunistic",
                        verify=policy == "require",
                        ca_file=str(self.settings.ca_file) if self.settings.ca_file else None,
                    )
                    try:
                        results = await self._try(endpoint, sender, rcpts, data)
                    except StageError as exc:
                        last, last_stage = exc.reply, exc.stage
                        if classify(exc.stage, exc.reply) is Outcome.PERMANENT:
                            # e.g. 5xx to MAIL FROM: the domain refuses this sender.
                            return exc.results(self.name, len(rcpts))
                        log.info("mx %s host %s [%s]: %s", domain, host.name, address, exc.reply)
                        continue
                    return results
        return [AttemptResult(Outcome.TEMPORARY, last, self.name, last_stage) for _ in rcpts]

    async def _try(
        self, endpoint: Endpoint, sender: str, rcpts: list[str], data: bytes
    ) -> list[AttemptResult]:
        try:
            client = await connect(endpoint, self._local_hostname, self._timeouts)
        except StageError as exc:
            if endpoint.tls != "opportunistic" or exc.stage != "starttls":
                raise
            # Opportunistic TLS that fails is retried in clear text, as MTAs do.
            plain = Endpoint(endpoint.address, endpoint.port, endpoint.name, "none", False)
            client = await connect(plain, self._local_hostname, self._timeouts)
        try:
            return await transaction(
                client,
                sender,
                rcpts,
                data,
                provider=self.name,
                timeouts=self._timeouts,
                chunking=self.settings.chunking,
            )
        finally:
            await quit_quietly(client)

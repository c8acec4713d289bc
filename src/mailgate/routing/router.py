"""Which providers a delivery goes to, and failover between them.

Providers of the delivery's route (``[[routes]]``, or all providers) are tried in
``priority`` order, ``weight`` sharing the load within one priority, skipping those
whose circuit breaker is open. Within one attempt a recipient moves on to the next
provider after a temporary failure or a provider-level 5xx (connect, EHLO, TLS, AUTH,
MAIL, DATA); a 5xx to RCPT is the recipient's and ends it there. ``rate`` is enforced
with a token bucket per provider.

A message pinned to one provider (``provider``, chosen by the API client) is tried there
only: no failover, routes ignored, its breaker and rate still apply. A pinned provider that
is no longer configured defers the delivery (451 4.3.5) rather than bouncing it, so a
configuration mistake can be undone without losing mail.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailgate.config import Settings
from mailgate.config_sending import ProviderSettings
from mailgate.models import SKIPPED, AttemptResult, Outcome, SmtpReply
from mailgate.ratelimit import TokenBucket
from mailgate.routing.breaker import CircuitBreaker
from mailgate.routing.resolver import MxResolver
from mailgate.routing.status import ProviderHealth
from mailgate.transports.base import Transport
from mailgate.transports.maildir import MaildirTransport
from mailgate.transports.mx import MxTransport
from mailgate.transports.smtp import SmtpTransport
from mailgate.units import parse_rate

# Final for the recipient whatever provider is used: accepted, or refused by its domain.
_RECIPIENT_STAGES = frozenset({"rcpt", "dns"})


@dataclass(slots=True)
class Provider:
    settings: ProviderSettings
    transport: Transport
    breaker: CircuitBreaker | None
    bucket: TokenBucket | None


@dataclass(slots=True)
class Routed:
    """The final result per recipient, and the failed attempts before it (failover)."""

    results: list[AttemptResult]
    history: list[list[AttemptResult]]


def build_transport(
    provider: ProviderSettings, hostname: str, resolver: Callable[[], MxResolver]
) -> Transport:
    if provider.kind == "maildir":
        assert provider.path is not None
        return MaildirTransport(provider.name, provider.path)
    if provider.kind == "mx":
        return MxTransport(provider, local_hostname=hostname, resolver=resolver())
    return SmtpTransport(provider, local_hostname=hostname)


class Router:
    def __init__(
        self,
        settings: Settings,
        transports: dict[str, Transport] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._resolver: MxResolver | None = None
        self.health = ProviderHealth()  # for the admin API (routing/status.py)
        built = transports or {
            p.name: build_transport(p, settings.server.hostname, self.resolver)
            for p in settings.providers
        }
        self.providers: dict[str, Provider] = {}
        for p in settings.providers:
            breaker = (
                None
                if p.kind == "mx"
                else CircuitBreaker(p.breaker_failures, p.breaker_cooldown, clock)
            )
            bucket = None
            if p.rate:
                per_second = parse_rate(p.rate)
                capacity = max(1.0, per_second)
                bucket = TokenBucket(per_second, capacity, capacity, clock())
            self.providers[p.name] = Provider(p, built[p.name], breaker, bucket)

    def resolver(self) -> MxResolver:
        if self._resolver is None:
            dns = self._settings.dns
            self._resolver = MxResolver(dns.nameservers, timeout=dns.timeout, lifetime=dns.lifetime)
        return self._resolver

    def is_direct(self, provider: str) -> bool:
        """Does acceptance by this provider mean "delivered" (an MX) rather than "sent"?"""
        p = self.providers.get(provider)
        return p is not None and p.transport.direct

    def route_for(self, recipient: str, sender: str) -> int | None:
        """Index of the first [[routes]] entry that matches, or None for the default."""
        rcpt_domain = recipient.rpartition("@")[2].lower()
        sender_domain = sender.rpartition("@")[2].lower()
        for i, route in enumerate(self._settings.routes):
            if route.matches(rcpt_domain, sender_domain):
                return i
        return None

    def _candidates(self, route: int | None) -> list[Provider]:
        names = (
            self._settings.routes[route].providers
            if route is not None
            else [p.name for p in self._settings.providers]
        )
        chosen = [self.providers[n] for n in names]
        ordered: list[Provider] = []
        for priority in sorted({p.settings.priority for p in chosen}):
            group = [p for p in chosen if p.settings.priority == priority]
            ordered.extend(self._weighted_order(group))
        return ordered

    def _weighted_order(self, group: list[Provider]) -> list[Provider]:
        """A random order where each provider comes first in proportion to its weight."""
        rest = list(group)
        out: list[Provider] = []
        while rest:
            weights = [max(p.settings.weight, 0) for p in rest]
            if not any(weights):
                out.extend(rest)
                break
            (pick,) = self._rng.choices(rest, weights=weights)
            out.append(pick)
            rest.remove(pick)
        return out

    async def _pace(self, provider: Provider) -> None:
        if provider.bucket is None:
            return
        while (wait := provider.bucket.take(self._clock())) > 0:
            await asyncio.sleep(wait)

    async def deliver(
        self,
        route: int | None,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        provider: str = "",
    ) -> Routed:
        """Deliver through the route's providers with failover, or only through ``provider``
        when the message is pinned to one."""
        n = len(recipients)
        if provider and provider not in self.providers:
            reply = SmtpReply(451, "4.3.5", f"provider {provider} is not configured")
            missing = AttemptResult(Outcome.TEMPORARY, reply, provider, "local")
            return Routed([missing] * n, [[] for _ in range(n)])
        final: list[AttemptResult | None] = [None] * n
        history: list[list[AttemptResult]] = [[] for _ in range(n)]
        pending = list(range(n))
        tls_policy = self._settings.routes[route].tls_policy if route is not None else None
        candidates = [self.providers[provider]] if provider else self._candidates(route)
        blocked: list[str] = []  # providers skipped for an open breaker
        for candidate in candidates:
            if not pending:
                break
            if candidate.breaker is not None and not candidate.breaker.allow():
                blocked.append(candidate.settings.name)
                continue
            await self._pace(candidate)
            batch = [recipients[i] for i in pending]
            breaker = candidate.breaker
            gate = None if breaker is None else (lambda b=breaker: not b.blocks())
            got = await candidate.transport.deliver(
                sender, batch, data, gate=gate, tls_policy=tls_policy
            )
            if got and all(r.stage == SKIPPED for r in got):
                continue  # never tried: not a failure of the provider, nothing to record
            self.health.record(candidate.settings.name, got)
            if candidate.breaker is not None:
                works = any(r.outcome is Outcome.SENT or r.stage in _RECIPIENT_STAGES for r in got)
                candidate.breaker.record(works)
            still: list[int] = []
            for i, r in zip(pending, got, strict=True):
                if r.outcome is Outcome.SENT or (
                    r.outcome is Outcome.PERMANENT and r.stage in _RECIPIENT_STAGES
                ):
                    final[i] = r
                else:
                    history[i].append(r)
                    still.append(i)
            pending = still
        for i in pending:
            tried = history[i]
            if not tried:
                why = (
                    f"provider {provider} not available (circuit breaker open)"
                    if provider
                    else "no provider available (circuit breakers open)"
                )
                # What opened them: the reply an expired message's DSN and last_response
                # show, which said only this.
                cause = self.health.last_error(blocked)
                reply = SmtpReply(451, "4.4.1", f"{why}; last error {cause}" if cause else why)
                final[i] = AttemptResult(Outcome.TEMPORARY, reply, "", "connect")
                continue
            last = tried.pop()
            if all(r.outcome is Outcome.PERMANENT for r in (*tried, last)):
                final[i] = last  # every provider refused it for good: bounce
            else:
                final[i] = AttemptResult(Outcome.TEMPORARY, last.reply, last.provider, last.stage)
        return Routed([r for r in final if r is not None], history)

    async def close(self) -> None:
        for p in self.providers.values():
            await p.transport.close()

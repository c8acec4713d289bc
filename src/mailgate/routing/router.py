"""Choosing the provider for a delivery: lowest ``priority`` first, ``weight`` within it.

Failover between providers and circuit breakers come with the delivery-engine work; the
choice is made here so the scheduler never needs to know about providers.
"""

from __future__ import annotations

import random

from mailgate.config import ProviderSettings, Settings
from mailgate.transports.base import Transport
from mailgate.transports.maildir import MaildirTransport
from mailgate.transports.smtp import SmtpTransport


def build_transport(provider: ProviderSettings, hostname: str) -> Transport:
    if provider.kind == "maildir":
        assert provider.path is not None
        return MaildirTransport(provider.name, provider.path)
    return SmtpTransport(provider, local_hostname=hostname)


class Router:
    def __init__(self, settings: Settings, transports: dict[str, Transport] | None = None) -> None:
        self._providers = sorted(settings.providers, key=lambda p: p.priority)
        self.transports: dict[str, Transport] = transports or {
            p.name: build_transport(p, settings.server.hostname) for p in self._providers
        }
        self._rng = random.Random()

    def choose(self) -> Transport:
        """The transport for the next delivery."""
        top = self._providers[0].priority
        group = [p for p in self._providers if p.priority == top]
        weights = [p.weight for p in group]
        if len(group) == 1 or not any(weights):
            return self.transports[group[0].name]
        (pick,) = self._rng.choices(group, weights=weights)
        return self.transports[pick.name]

    async def close(self) -> None:
        for transport in self.transports.values():
            await transport.close()

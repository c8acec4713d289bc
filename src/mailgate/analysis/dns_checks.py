"""Is the From domain set up to be trusted: a DKIM key here, SPF and DMARC in its DNS.

The TXT lookups use the relay's own resolver settings ([dns] nameservers), capped at
2 seconds per check, and their answers are cached (for the record's TTL, between one
minute and an hour; "no record" for five minutes; "the DNS did not answer" for 30
seconds, so a dead resolver costs one wait, not one per request). A lookup that fails
is an info-level "could not check" issue, never an error of the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

from mailgate.analysis.issues import Issue
from mailgate.analysis.link_checks import organizational_domain
from mailgate.config import Settings
from mailgate.domains_check import make_resolver
from mailgate.shared_cache import SharedCache

TIMEOUT = 2.0  # seconds, the most one check may wait for the DNS
MIN_TTL, MAX_TTL = 60.0, 3600.0
NEGATIVE_TTL = 300.0
FAILURE_TTL = 30.0
CACHE_SIZE = 10_000

Records = list[str] | None  # TXT strings ([] if none), or None: the DNS did not answer


def dkim_issue(settings: Settings, domain: str) -> list[Issue]:
    """High when the relay has no DKIM key for the From domain (mail goes out unsigned)."""
    for d in settings.domains:
        if d.name == domain and d.dkim_pairs():
            return []
    return [
        Issue(
            "authentication",
            "missing_dkim",
            "high",
            f"No DKIM key is configured for {domain}: its mail goes out unsigned",
            15,
            f"Run mailgate dkim keygen --domain {domain} and set dkim_selector/dkim_key in "
            "[[domains]]",
        )
    ]


class DnsChecker:
    """SPF and DMARC of sender domains, with a bounded cache shared by all requests."""

    def __init__(
        self,
        settings: Settings,
        resolver: dns.asyncresolver.Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._cache: SharedCache[str, Records] = SharedCache(CACHE_SIZE, clock)

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            resolver = make_resolver(self._settings)
            resolver.timeout = min(resolver.timeout, TIMEOUT)
            resolver.lifetime = min(resolver.lifetime, TIMEOUT)
            self._resolver = resolver
        return self._resolver

    async def txt(self, name: str) -> Records:
        """The TXT strings at ``name``, from the cache or one shared lookup."""
        return await self._cache.get(name, lambda: self._lookup(name))

    async def _lookup(self, name: str) -> tuple[Records, float]:
        records: Records
        try:
            async with asyncio.timeout(TIMEOUT):
                answer = await self._get_resolver().resolve(name, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            records, ttl = [], NEGATIVE_TTL
        except (dns.exception.DNSException, TimeoutError, OSError):
            records, ttl = None, FAILURE_TTL
        else:
            records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            rrset_ttl = answer.rrset.ttl if answer.rrset is not None else NEGATIVE_TTL
            ttl = min(max(float(rrset_ttl), MIN_TTL), MAX_TTL) if records else NEGATIVE_TTL
        return records, ttl

    async def check(self, domain: str) -> list[Issue]:
        """SPF at the domain, DMARC at it or at its organizational domain."""
        org = organizational_domain(domain)
        names = [domain, f"_dmarc.{domain}"] + ([f"_dmarc.{org}"] if org != domain else [])
        found = await asyncio.gather(*(self.txt(n) for n in names))
        return _spf(domain, found[0]) + _dmarc(domain, found[1:])


def _unchecked(domain: str, what: str, name: str) -> Issue:
    return Issue(
        "authentication",
        f"{what}_unchecked",
        "info",
        f"Could not check {what.upper()} of {domain}: the DNS did not answer for {name}",
        0,
        "",
    )


def _spf(domain: str, records: Records) -> list[Issue]:
    if records is None:
        return [_unchecked(domain, "spf", domain)]
    spf = [r for r in records if r.lower().startswith("v=spf1")]
    if not spf:
        return [
            Issue(
                "authentication",
                "missing_spf",
                "high",
                f"{domain} publishes no SPF record",
                10,
                f'Publish an SPF record for {domain} ("v=spf1 ip4:<relay address> '
                'include:<your providers> ~all")',
            )
        ]
    if len(spf) > 1:
        return [
            Issue(
                "authentication",
                "multiple_spf",
                "medium",
                f"{domain} publishes {len(spf)} SPF records (an SPF permerror)",
                10,
                "Merge the SPF records into one",
            )
        ]
    return []


def _dmarc(domain: str, answers: list[Records]) -> list[Issue]:
    for records in answers:
        if records and any(r.upper().startswith("V=DMARC1") for r in records):
            return []
    if any(records is None for records in answers):
        return [_unchecked(domain, "dmarc", f"_dmarc.{domain}")]
    return [
        Issue(
            "authentication",
            "missing_dmarc",
            "medium",
            f"{domain} publishes no DMARC record",
            10,
            f'Publish a DMARC record at _dmarc.{organizational_domain(domain)} ("v=DMARC1; '
            'p=none; rua=mailto:...")',
        )
    ]

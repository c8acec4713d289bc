"""``mailgate domains check``: is each sending domain's DNS right for what the relay sends?

For every ``[[domains]]`` entry: each DKIM selector's TXT record (published, and matching
our key), SPF, DMARC and MX. Each row says what is wrong and what to publish instead.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from mailgate.config import Settings
from mailgate.delivery.dkim_keys import DkimKey, dns_record_name, dns_txt_strings
from mailgate.routing.resolver import parse_nameserver


@dataclass(frozen=True, slots=True)
class Check:
    domain: str
    what: str
    ok: bool
    detail: str


def make_resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    if not settings.dns.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=True)
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [parse_nameserver(n) for n in settings.dns.nameservers]
    resolver.timeout = settings.dns.timeout
    resolver.lifetime = settings.dns.lifetime
    return resolver


async def _txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[str] | None:
    """The TXT strings at ``name`` ([] if none), or None if the DNS did not answer."""
    try:
        answer = await resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException:
        return None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _tags(record: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().lower()] = re.sub(r"\s+", "", value)
    return out


async def _check_dkim(resolver: dns.asyncresolver.Resolver, domain: str, key: DkimKey) -> Check:
    name = dns_record_name(key.selector, domain)
    expected = _tags(key.txt_value())
    records = await _txt(resolver, name)
    fix = f"publish {name}. IN TXT {dns_txt_strings(key.txt_value())}"
    what = f"dkim {key.selector}"
    if records is None:
        return Check(domain, what, False, f"DNS did not answer for {name}; retry later")
    published = [_tags(r) for r in records if "p=" in r]
    if not published:
        return Check(domain, what, False, f"no DKIM record at {name}: {fix}")
    if any(t.get("p") == expected["p"] for t in published):
        return Check(domain, what, True, f"{name} matches the key in {key.path}")
    return Check(domain, what, False, f"{name} holds another key than {key.path}: {fix}")


async def _check_spf(resolver: dns.asyncresolver.Resolver, domain: str) -> Check:
    records = await _txt(resolver, domain)
    if records is None:
        return Check(domain, "spf", False, "DNS did not answer; retry later")
    spf = [r for r in records if r.lower().startswith("v=spf1")]
    if not spf:
        return Check(
            domain,
            "spf",
            False,
            f'no SPF record: publish {domain}. IN TXT "v=spf1 ip4:<relay address> '
            'include:<your providers> ~all"',
        )
    if len(spf) > 1:
        return Check(domain, "spf", False, "more than one SPF record (a permerror): merge them")
    return Check(domain, "spf", True, spf[0])


async def _check_dmarc(resolver: dns.asyncresolver.Resolver, domain: str) -> Check:
    records = await _txt(resolver, f"_dmarc.{domain}")
    if records is None:
        return Check(domain, "dmarc", False, "DNS did not answer; retry later")
    dmarc = [r for r in records if r.upper().startswith("V=DMARC1")]
    if not dmarc:
        return Check(
            domain,
            "dmarc",
            False,
            f'no DMARC record: publish _dmarc.{domain}. IN TXT "v=DMARC1; p=none; '
            f'rua=mailto:dmarc@{domain}"',
        )
    return Check(domain, "dmarc", True, dmarc[0])


async def _check_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> Check:
    try:
        answer = await resolver.resolve(domain, "MX", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Check(domain, "mx", False, "the domain does not exist in DNS")
    except dns.exception.DNSException:
        return Check(domain, "mx", False, "DNS did not answer; retry later")
    hosts = sorted((r.preference, r.exchange.to_text()) for r in answer)
    if not hosts:
        return Check(domain, "mx", False, "no MX: replies and bounces to this domain go nowhere")
    if hosts == [(0, ".")]:
        return Check(domain, "mx", False, "null MX: this domain receives no mail (replies bounce)")
    return Check(domain, "mx", True, ", ".join(f"{p} {h}" for p, h in hosts))


async def _unsigned(domain: str) -> Check:
    return Check(
        domain,
        "dkim",
        False,
        f"mail from {domain} is not signed: run mailgate dkim keygen --domain {domain} "
        "--selector <name> and add dkim_selector/dkim_key to [[domains]]",
    )


async def check_domains(
    settings: Settings, resolver: dns.asyncresolver.Resolver | None = None
) -> list[Check]:
    resolver = resolver or make_resolver(settings)
    jobs = []
    for d in settings.domains:
        pairs = d.dkim_pairs()
        if not pairs:
            jobs.append(_unsigned(d.name))
        for selector, path in pairs:
            jobs.append(_check_dkim(resolver, d.name, DkimKey.load(d.name, selector, path)))
        jobs += [
            _check_spf(resolver, d.name),
            _check_dmarc(resolver, d.name),
            _check_mx(resolver, d.name),
        ]
    return list(await asyncio.gather(*jobs))

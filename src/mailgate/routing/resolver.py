"""Where mail for a domain goes: MX lookup for the direct route (RFC 5321 5.1, RFC 7505).

The answer is always an :class:`MxResult`, never an exception, because the caller must
turn every DNS outcome into a delivery decision: hosts to try, a bounce (the domain does
not exist, or publishes a null MX), or a deferral (the DNS is broken right now; retrying
helps). A wrong "permanent" loses mail, so only definite answers are permanent.

Results are cached per domain for as long as the DNS allows (the smallest TTL involved),
negative answers for the SOA minimum up to a cap, temporary failures not at all; lookups
of one domain that overlap share one set of queries. Use one instance per event loop.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdata import Rdata

from mailgate.models import SmtpReply
from mailgate.units import parse_hostport

__all__ = [
    "MxHost",
    "MxResolver",
    "MxResult",
    "address_literal",
    "domain_name",
    "parse_nameserver",
]

DEFAULT_PORT = 53
# An incomplete answer (some host's A/AAAA lookup failed) is kept briefly: long enough to
# spare a broken nameserver a query per delivery, short enough to pick up the repair.
PARTIAL_TTL = 30.0


@dataclass(frozen=True, slots=True)
class MxHost:
    """One mail exchanger: ASCII (IDNA) name, preference, IPv4 then IPv6 addresses."""

    name: str
    preference: int
    addresses: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MxResult:
    """Hosts to try in order, or an error; ``permanent`` says whether retrying can help."""

    hosts: list[MxHost] = field(default_factory=list)
    error: SmtpReply | None = None
    permanent: bool = False
    implicit: bool = False  # no MX: the domain itself is the host (RFC 5321 5.1)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Kind(enum.Enum):
    OK = "ok"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class _Answer:
    """One query's outcome; ``ttl`` is how long it may be cached (0 for failures)."""

    kind: _Kind
    records: tuple[Rdata, ...] = ()
    ttl: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: list[str]
    ttl: float
    temporary: bool
    reason: str = ""


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> a nameserver."""
    stripped = text.strip()
    if stripped.count(":") > 1 and not stripped.startswith("["):
        host, port = stripped, DEFAULT_PORT  # a bare IPv6 address
    elif stripped.startswith(":"):
        raise ValueError(f"nameserver {text!r} is not an IP address")
    else:
        host, port = parse_hostport(stripped, default_port=DEFAULT_PORT)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad nameserver port in {text!r}")
    return dns.nameserver.Do53Nameserver(host, port)


def domain_name(domain: str) -> dns.name.Name:
    """The absolute DNS name of a mail domain; unicode is IDNA-encoded (raises ValueError)."""
    if domain.strip().startswith("["):
        raise ValueError(f"invalid address literal {domain!r}")
    try:
        name = dns.name.from_text(domain.strip())
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from None
    if name == dns.name.root:
        raise ValueError("empty domain")
    return name


def address_literal(domain: str) -> str | None:
    """The IP of an RFC 5321 address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``)."""
    text = domain.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def _host_text(name: dns.name.Name) -> str:
    return name.canonicalize().to_text(omit_final_dot=True)


def _display(name: dns.name.Name) -> str:
    """The domain for reply texts: unicode, with anything unprintable escaped by dnspython."""
    return name.to_unicode(omit_final_dot=True)


def _failure_reason(exc: dns.exception.DNSException) -> str:
    """Why no answer came, in a few words safe to show a client (no server addresses)."""
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        for _server, _tcp, _port, error, _response in errors:
            if isinstance(error, str):
                return error  # the rcode: SERVFAIL, REFUSED, ...
            if isinstance(error, OSError):
                return "nameserver unreachable"
            return type(error).__name__
        return "no nameserver answered"
    return type(exc).__name__


def _exchanges(records: Sequence[Rdata]) -> dict[dns.name.Name, int]:
    """Exchange -> lowest preference; "." entries dropped (all "." = null MX, RFC 7505)."""
    best: dict[dns.name.Name, int] = {}
    for rd in records:
        exchange = rd.exchange.canonicalize()  # type: ignore[attr-defined]
        if exchange != dns.name.root:
            best[exchange] = min(best.get(exchange, 65535), rd.preference)  # type: ignore[attr-defined]
    return best


def _partial(ttl: float, incomplete: bool) -> float:
    """The cache time of a usable answer, short when some address lookup failed."""
    return min(ttl, PARTIAL_TTL) if incomplete else ttl


def _temporary(domain: str, reason: str) -> MxResult:
    text = f"DNS lookup for {domain} failed temporarily ({reason})"
    return MxResult(error=SmtpReply(451, "4.4.3", text), permanent=False)


def _permanent(code: int, enhanced: str, text: str) -> MxResult:
    return MxResult(error=SmtpReply(code, enhanced, text), permanent=True)


class MxResolver:
    """Resolves a mail domain to the hosts to deliver to, with a TTL-honouring cache."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        lifetime: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        negative_ttl: float = 300.0,
        cache_size: int = 10_000,
    ) -> None:
        """``nameservers`` empty = /etc/resolv.conf; ``negative_ttl`` caps negative caching."""
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [parse_nameserver(ns) for ns in nameservers]
        else:
            resolver = dns.asyncresolver.Resolver(configure=True)
        resolver.timeout = timeout  # per attempt at one nameserver
        resolver.lifetime = lifetime  # per query, all attempts and nameservers included
        resolver.cache = None  # we cache whole results, with our own clock
        self._resolver = resolver
        self._rng = rng or random.Random()
        self._clock = clock
        self._negative_ttl = negative_ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, MxResult]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[MxResult]] = {}

    async def resolve(self, domain: str) -> MxResult:
        """The hosts for ``domain`` by preference (equal ones shuffled), or why there are none."""
        literal = address_literal(domain)
        if literal is not None:  # RFC 5321 5.1: an address literal is used as is, no DNS
            return MxResult(hosts=[MxHost(domain.strip(), 0, [literal])], implicit=True)
        try:
            name = domain_name(domain)
        except ValueError:
            return _permanent(550, "5.1.2", f"Invalid destination domain {domain!r}")
        key = name.canonicalize().to_text()
        result = self._cached(key)
        if result is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.ensure_future(self._lookup_and_cache(key, name))
                self._inflight[key] = task
                task.add_done_callback(lambda done: self._forget(key, done))
            # shield: a cancelled caller must not cancel the lookup others wait for.
            result = await asyncio.shield(task)
        return self._shuffled(result)

    # -- cache ------------------------------------------------------------------------

    def _cached(self, key: str) -> MxResult | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        return result

    def _store(self, key: str, result: MxResult, expires: float) -> None:
        self._cache[key] = (expires, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _forget(self, key: str, task: asyncio.Task[MxResult]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _lookup_and_cache(self, key: str, name: dns.name.Name) -> MxResult:
        # TTLs count from when the answers were given, so start the clock before asking.
        started = self._clock()
        result, ttl = await self._lookup(name)
        if ttl > 0:
            self._store(key, result, started + ttl)
        return result

    def _shuffled(self, result: MxResult) -> MxResult:
        """A fresh copy: equal preferences in random order, so load spreads (RFC 5321 5.1)."""
        if not result.hosts:
            return result
        hosts = [replace(h, addresses=list(h.addresses)) for h in result.hosts]
        self._rng.shuffle(hosts)
        hosts.sort(key=lambda h: h.preference)  # stable: the shuffle decides among equals
        return replace(result, hosts=hosts)

    # -- lookups ----------------------------------------------------------------------

    async def _lookup(self, name: dns.name.Name) -> tuple[MxResult, float]:
        """The result and how long it may be cached (0 = not at all)."""
        domain = _display(name)
        mx = await self._query(name, dns.rdatatype.MX)
        if mx.kind is _Kind.TEMPORARY:
            return _temporary(domain, mx.reason), 0.0
        if mx.kind is _Kind.NXDOMAIN:
            text = f"Domain {domain} does not exist (DNS NXDOMAIN)"
            return _permanent(550, "5.1.2", text), mx.ttl
        if mx.kind is _Kind.NODATA:
            return await self._implicit(name, domain, mx.ttl)
        exchanges = _exchanges(mx.records)
        if not exchanges:
            text = f"Domain {domain} does not accept mail (null MX)"
            return _permanent(556, "5.1.10", text), min(mx.ttl, self._negative_ttl)
        return await self._hosts(exchanges, domain, mx.ttl)

    async def _implicit(
        self, name: dns.name.Name, domain: str, mx_ttl: float
    ) -> tuple[MxResult, float]:
        """No MX: the domain itself is the only host, if it has an address."""
        found = await self._addresses(name)
        if found.addresses:
            host = MxHost(_host_text(name), 0, found.addresses)
            ttl = _partial(min(mx_ttl, found.ttl), found.temporary)
            return MxResult(hosts=[host], implicit=True), ttl
        if found.temporary:
            return _temporary(domain, found.reason), 0.0
        text = f"Domain {domain} has no mail server (no MX, A or AAAA record)"
        return _permanent(550, "5.4.4", text), min(mx_ttl, found.ttl)

    async def _hosts(
        self, exchanges: dict[dns.name.Name, int], domain: str, mx_ttl: float
    ) -> tuple[MxResult, float]:
        """Addresses of every MX host, looked up together; hosts without any are kept."""
        names = list(exchanges)
        found = await asyncio.gather(*(self._addresses(n) for n in names))
        hosts = [
            MxHost(_host_text(n), exchanges[n], f.addresses)
            for n, f in zip(names, found, strict=True)
        ]
        # dnspython shuffles RRsets on the wire; a fixed order makes the rng's shuffle
        # the only source of randomness (reproducible in tests).
        hosts.sort(key=lambda h: (h.preference, h.name))
        ttl = min([mx_ttl, *(f.ttl for f in found)])
        temporary = [f for f in found if f.temporary]
        if any(h.addresses for h in hosts):
            return MxResult(hosts=hosts), _partial(ttl, bool(temporary))
        if temporary:
            return _temporary(domain, temporary[0].reason), 0.0
        text = f"No mail server of {domain} has an address (A or AAAA record)"
        return _permanent(550, "5.4.4", text), ttl

    async def _addresses(self, name: dns.name.Name) -> _Addresses:
        """IPv4 then IPv6 addresses; whether either lookup failed temporarily."""
        a, aaaa = await asyncio.gather(
            self._query(name, dns.rdatatype.A), self._query(name, dns.rdatatype.AAAA)
        )
        addresses: list[str] = []
        for rd in (*a.records, *aaaa.records):
            if rd.address not in addresses:  # type: ignore[attr-defined]
                addresses.append(rd.address)  # type: ignore[attr-defined]
        failed = [q for q in (a, aaaa) if q.kind is _Kind.TEMPORARY]
        ttls = [q.ttl for q in (a, aaaa) if q.kind is not _Kind.TEMPORARY]
        return _Addresses(
            addresses,
            ttl=min(ttls, default=PARTIAL_TTL),
            temporary=bool(failed),
            reason=failed[0].reason if failed else "",
        )

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Answer:
        """One query, every outcome turned into an _Answer (negative TTLs capped)."""
        try:
            answer = await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            return _Answer(_Kind.NXDOMAIN, ttl=self._nxdomain_ttl(exc))
        except dns.exception.DNSException as exc:
            return _Answer(_Kind.TEMPORARY, reason=_failure_reason(exc))
        ttl = float(answer.chaining_result.minimum_ttl)
        if answer.rrset is None:
            return _Answer(_Kind.NODATA, ttl=min(ttl, self._negative_ttl))
        return _Answer(_Kind.OK, records=tuple(answer.rrset), ttl=ttl)

    def _nxdomain_ttl(self, exc: dns.resolver.NXDOMAIN) -> float:
        """RFC 2308: min(SOA TTL, SOA minimum) from the response, capped; cap if no SOA."""
        ttls = []
        for response in exc.kwargs.get("responses", {}).values():
            try:
                ttls.append(float(response.resolve_chaining().minimum_ttl))
            except dns.exception.DNSException:
                continue
        return min([self._negative_ttl, *ttls])

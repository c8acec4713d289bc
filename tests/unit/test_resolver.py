"""mailgate.routing.resolver: MX lookup against the fake DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from fakes.dns import DnsServer
from mailgate.routing.resolver import PARTIAL_TTL, MxResolver, MxResult, parse_nameserver


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer() as srv:
        yield srv
    assert srv.errors == []


def make(server: DnsServer, **kwargs: Any) -> MxResolver:
    kwargs.setdefault("timeout", 0.2)
    kwargs.setdefault("lifetime", 0.5)
    return MxResolver([server.nameserver], **kwargs)


def resolve(resolver: MxResolver, *domains: str) -> list[MxResult]:
    """Resolve the domains one after the other, in one event loop."""

    async def run() -> list[MxResult]:
        return [await resolver.resolve(d) for d in domains]

    return asyncio.run(run())


def summary(result: MxResult) -> list[tuple[str, int, list[str]]]:
    return [(h.name, h.preference, h.addresses) for h in result.hosts]


# -- answers ------------------------------------------------------------------------------


def test_mx_hosts_sorted_by_preference(server: DnsServer) -> None:
    server.add("example.test", "MX", "20 mx2.example.test.")
    server.add("example.test", "MX", "10 mx1.example.test.")
    server.add("example.test", "MX", "30 mx3.example.test.")
    for i in (1, 2, 3):
        server.add(f"mx{i}.example.test", "A", f"127.0.0.{i}")
    (result,) = resolve(make(server), "example.test")
    assert result.ok and result.error is None and not result.permanent and not result.implicit
    assert summary(result) == [
        ("mx1.example.test", 10, ["127.0.0.1"]),
        ("mx2.example.test", 20, ["127.0.0.2"]),
        ("mx3.example.test", 30, ["127.0.0.3"]),
    ]


def test_equal_preferences_are_shuffled_reproducibly(server: DnsServer) -> None:
    server.add("example.test", "MX", "5 primary.example.test.")
    for name in "abcd":
        server.add("example.test", "MX", f"10 {name}.example.test.")
        server.add(f"{name}.example.test", "A", "127.0.0.1")
    server.add("primary.example.test", "A", "127.0.0.2")

    def orders(seed: int) -> list[list[str]]:
        results = resolve(make(server, rng=random.Random(seed)), *["example.test"] * 20)
        return [[h.name.split(".")[0] for h in r.hosts] for r in results]

    first = orders(7)
    assert all(order[0] == "primary" and sorted(order[1:]) == list("abcd") for order in first)
    assert len({tuple(order) for order in first}) > 1  # cache hits are reshuffled too
    assert orders(7) == first  # the injected rng makes it reproducible


def test_no_mx_means_implicit_mx(server: DnsServer) -> None:
    server.add("plain.test", "A", "127.0.0.5")
    server.add("plain.test", "AAAA", "::1")
    (result,) = resolve(make(server), "plain.test")
    assert result.ok and result.implicit
    assert summary(result) == [("plain.test", 0, ["127.0.0.5", "::1"])]


def test_no_mx_and_no_address_is_permanent(server: DnsServer) -> None:
    server.add("textonly.test", "TXT", "v=spf1 -all")
    (result,) = resolve(make(server), "textonly.test")
    assert result.permanent and result.hosts == []
    assert result.error is not None
    assert (result.error.code, result.error.enhanced) == (550, "5.4.4")


def test_null_mx_is_permanent_5_1_10(server: DnsServer) -> None:
    server.add("nullmx.test", "MX", "0 .")
    server.add("nullmx.test", "A", "127.0.0.1")  # must not be used as an implicit MX
    (result,) = resolve(make(server), "nullmx.test")
    assert result.permanent and result.hosts == []
    assert result.error is not None
    assert (result.error.code, result.error.enhanced) == (556, "5.1.10")
    assert server.count("nullmx.test", "A") == 0


def test_nxdomain_is_permanent_5_1_2(server: DnsServer) -> None:
    (result,) = resolve(make(server), "nowhere.test")
    assert result.permanent and result.hosts == []
    assert result.error is not None and result.error.line().startswith("550 5.1.2 ")


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_servfail_and_refused_are_temporary_4_4_3(server: DnsServer, rcode: int) -> None:
    server.set_rcode("broken.test", rcode)
    (result,) = resolve(make(server), "broken.test")
    assert not result.permanent and result.hosts == []
    assert result.error is not None
    assert (result.error.code, result.error.enhanced) == (451, "4.4.3")
    assert dns.rcode.to_text(rcode) in result.error.text


def test_timeout_is_temporary(server: DnsServer) -> None:
    server.set_timeout("slow.test")
    started = time.monotonic()
    (result,) = resolve(make(server, timeout=0.2, lifetime=0.4), "slow.test")
    assert time.monotonic() - started < 2
    assert not result.permanent and result.error is not None
    assert result.error.enhanced == "4.4.3" and "timeout" in result.error.text
    assert server.count("slow.test", "MX") >= 1


def test_unreachable_nameserver_is_temporary() -> None:
    with DnsServer() as srv:
        nameserver = srv.nameserver
    (result,) = resolve(MxResolver([nameserver], timeout=0.2, lifetime=0.4), "example.test")
    assert not result.permanent and result.error is not None
    assert result.error.enhanced == "4.4.3"


def test_internationalised_domain(server: DnsServer) -> None:
    server.add("bücher.test", "MX", "10 mx.bücher.test.")
    server.add("mx.bücher.test", "A", "127.0.0.9")
    results = resolve(make(server), "bücher.test", "BÜCHER.test.")
    assert summary(results[0]) == [("mx.xn--bcher-kva.test", 10, ["127.0.0.9"])]
    (missing,) = resolve(make(server), "größe.test")
    assert missing.error is not None and "größe.test" in missing.error.text
    assert results[1] == results[0]
    assert server.queries[("xn--bcher-kva.test", "MX")] == 1  # same name, so a cache hit


def test_ipv6_only_host_and_ipv4_first(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 v6.example.test.")
    server.add("example.test", "MX", "20 dual.example.test.")
    server.add("v6.example.test", "AAAA", "2001:db8::25")
    server.add("dual.example.test", "AAAA", "2001:db8::26")
    server.add("dual.example.test", "A", "127.0.0.26")
    (result,) = resolve(make(server), "example.test")
    assert summary(result) == [
        ("v6.example.test", 10, ["2001:db8::25"]),
        ("dual.example.test", 20, ["127.0.0.26", "2001:db8::26"]),
    ]


def test_host_without_address_is_kept_empty(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 gone.example.test.")  # NXDOMAIN
    server.add("example.test", "MX", "20 noaddr.example.test.")  # NODATA
    server.add("example.test", "MX", "30 mx.example.test.")
    server.add("noaddr.example.test", "TXT", "no address here")
    server.add("mx.example.test", "A", "127.0.0.1")
    (result,) = resolve(make(server), "example.test")
    assert result.ok
    assert summary(result) == [
        ("gone.example.test", 10, []),
        ("noaddr.example.test", 20, []),
        ("mx.example.test", 30, ["127.0.0.1"]),
    ]


def test_no_mx_host_with_an_address_is_permanent(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 gone.example.test.")
    (result,) = resolve(make(server), "example.test")
    assert result.permanent and result.error is not None
    assert result.error.enhanced == "5.4.4"


def test_mx_host_lookup_failure_is_temporary(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.")
    server.set_rcode("mx.example.test", "SERVFAIL")
    (result,) = resolve(make(server), "example.test")
    assert not result.permanent and result.error is not None
    assert result.error.enhanced == "4.4.3"


def test_partial_answer_is_used_and_cached_briefly(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.", ttl=3600)
    server.add("mx.example.test", "A", "127.0.0.1", ttl=3600)
    server.set_rcode("mx.example.test", "SERVFAIL", rtype="AAAA")
    clock = Clock()
    resolver = make(server, clock=clock)
    (result,) = resolve(resolver, "example.test")
    assert result.ok and summary(result) == [("mx.example.test", 10, ["127.0.0.1"])]
    clock.now += PARTIAL_TTL - 1
    resolve(resolver, "example.test")
    assert server.count("example.test", "MX") == 1
    clock.now += 2
    resolve(resolver, "example.test")
    assert server.count("example.test", "MX") == 2


def test_mx_host_behind_cname(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mail.example.test.")
    server.add("mail.example.test", "CNAME", "real.example.test.")
    server.add("real.example.test", "A", "127.0.0.7")
    (result,) = resolve(make(server), "example.test")
    assert summary(result) == [("mail.example.test", 10, ["127.0.0.7"])]


def test_truncated_answer_is_retried_over_tcp(server: DnsServer) -> None:
    for i in range(30):
        server.add("big.test", "MX", f"{i} mx{i:02}.a-rather-long-mail-host-name.big.test.")
    server.add("mx00.a-rather-long-mail-host-name.big.test", "A", "127.0.0.1")
    (result,) = resolve(make(server), "big.test")
    assert len(result.hosts) == 30 and result.hosts[0].addresses == ["127.0.0.1"]
    assert server.tcp_queries >= 1


@pytest.mark.parametrize(
    ("literal", "address"),
    [("[127.0.0.1]", "127.0.0.1"), ("[IPv6:::1]", "::1"), ("[ipv6:2001:DB8::1]", "2001:db8::1")],
)
def test_address_literal_needs_no_dns(server: DnsServer, literal: str, address: str) -> None:
    (result,) = resolve(make(server), literal)
    assert result.ok and summary(result) == [(literal, 0, [address])]
    assert not server.queries


def test_invalid_domain_is_permanent_without_a_query(server: DnsServer) -> None:
    results = resolve(make(server), "", "a..b", "x" * 64 + ".test", "[not-an-ip]")
    assert all(r.permanent and r.error and r.error.enhanced == "5.1.2" for r in results)
    assert not server.queries


# -- nameservers --------------------------------------------------------------------------


def test_nameserver_as_host_and_port(server: DnsServer) -> None:
    server.add("plain.test", "A", "127.0.0.5")
    resolver = MxResolver([f"127.0.0.1:{server.port}"], timeout=0.2, lifetime=0.5)
    (result,) = resolve(resolver, "plain.test")
    assert summary(result) == [("plain.test", 0, ["127.0.0.5"])]


@pytest.mark.parametrize(
    ("text", "address", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 53),
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("[::1]:5353", "::1", 5353),
        ("[::1]", "::1", 53),
        ("::1", "::1", 53),
    ],
)
def test_parse_nameserver(text: str, address: str, port: int) -> None:
    ns = parse_nameserver(text)
    assert (ns.address, ns.port) == (address, port)


@pytest.mark.parametrize("text", ["dns.example", "dns.example:53", "[::1", "1.2.3.4:0", "[::1]x"])
def test_parse_nameserver_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


# -- cache and sharing --------------------------------------------------------------------


def test_second_resolve_is_a_cache_hit(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.")
    server.add("mx.example.test", "A", "127.0.0.1")
    first, second = resolve(make(server), "example.test", "example.test")
    assert second == first
    assert server.count("example.test", "MX") == 1
    assert server.count("mx.example.test", "A") == 1


def test_cache_expires_after_the_smallest_ttl(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.", ttl=300)
    server.add("mx.example.test", "A", "127.0.0.1", ttl=60)
    server.add("mx.example.test", "AAAA", "::1", ttl=120)
    clock = Clock()
    resolver = make(server, clock=clock)
    resolve(resolver, "example.test")
    server.remove("mx.example.test", "A")
    server.add("mx.example.test", "A", "127.0.0.2")
    clock.now += 59
    (cached,) = resolve(resolver, "example.test")
    assert cached.hosts[0].addresses == ["127.0.0.1", "::1"]
    clock.now += 2
    (fresh,) = resolve(resolver, "example.test")
    assert fresh.hosts[0].addresses == ["127.0.0.2", "::1"]
    assert server.count("example.test", "MX") == 2


def test_negative_answers_cached_for_soa_minimum() -> None:
    clock = Clock()
    with DnsServer(negative_ttl=30) as srv:
        resolver = make(srv, clock=clock)
        resolve(resolver, "nowhere.test")
        clock.now += 29
        resolve(resolver, "nowhere.test")
        assert srv.count("nowhere.test", "MX") == 1
        clock.now += 2
        resolve(resolver, "nowhere.test")
        assert srv.count("nowhere.test", "MX") == 2


@pytest.mark.parametrize("soa_minimum", [None, 3600])
def test_negative_cache_is_capped(soa_minimum: int | None) -> None:
    clock = Clock()
    with DnsServer(negative_ttl=soa_minimum) as srv:
        srv.add("nullmx.test", "MX", "0 .", ttl=86400)
        resolver = make(srv, clock=clock, negative_ttl=300)
        resolve(resolver, "nowhere.test", "nullmx.test")
        clock.now += 299
        resolve(resolver, "nowhere.test", "nullmx.test")
        assert srv.count("nowhere.test", "MX") == srv.count("nullmx.test", "MX") == 1
        clock.now += 2
        resolve(resolver, "nowhere.test", "nullmx.test")
        assert srv.count("nowhere.test", "MX") == srv.count("nullmx.test", "MX") == 2


def test_temporary_failures_are_not_cached(server: DnsServer) -> None:
    server.set_rcode("flaky.test", "SERVFAIL")
    resolver = make(server)
    first, second = resolve(resolver, "flaky.test", "flaky.test")
    assert first.error is not None and second.error is not None
    assert server.count("flaky.test", "MX") == 2
    server.clear_faults("flaky.test")
    server.add("flaky.test", "A", "127.0.0.1")
    (recovered,) = resolve(resolver, "flaky.test")
    assert recovered.ok and recovered.hosts[0].addresses == ["127.0.0.1"]


def test_cache_is_bounded(server: DnsServer) -> None:
    for name in ("a.test", "b.test", "c.test"):
        server.add(name, "A", "127.0.0.1")
    resolve(make(server, cache_size=2), "a.test", "b.test", "c.test", "c.test", "b.test", "a.test")
    assert server.count("a.test", "MX") == 2  # evicted by c.test, looked up again
    assert server.count("b.test", "MX") == server.count("c.test", "MX") == 1


def test_concurrent_resolves_share_one_lookup(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.")
    server.add("mx.example.test", "A", "127.0.0.1")
    resolver = make(server)

    async def run() -> list[MxResult]:
        return await asyncio.gather(*(resolver.resolve("example.test") for _ in range(10)))

    results = asyncio.run(run())
    assert all(summary(r) == [("mx.example.test", 10, ["127.0.0.1"])] for r in results)
    assert server.count("example.test", "MX") == 1
    assert server.count("mx.example.test", "A") == 1


def test_cancelled_caller_does_not_cancel_the_shared_lookup(server: DnsServer) -> None:
    server.add("example.test", "MX", "10 mx.example.test.")
    server.add("mx.example.test", "A", "127.0.0.1")
    resolver = make(server)

    async def run() -> MxResult:
        impatient = asyncio.ensure_future(resolver.resolve("example.test"))
        patient = asyncio.ensure_future(resolver.resolve("example.test"))
        await asyncio.sleep(0)
        impatient.cancel()
        return await patient

    assert asyncio.run(run()).ok
    assert server.count("example.test", "MX") == 1


# -- the fake server itself ---------------------------------------------------------------


def _ask(server: DnsServer, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    host, port = server.address
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=2)
    return dns.query.udp(query, host, port=port, timeout=2)


def test_fake_server_nxdomain_nodata_and_long_txt(server: DnsServer) -> None:
    server.add("deep.sub.example.test", "A", "127.0.0.1")
    server.add("example.test", "TXT", "x" * 300)
    assert _ask(server, "missing.example.test", "A").rcode() == dns.rcode.NXDOMAIN
    nodata = _ask(server, "deep.sub.example.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    # An empty non-terminal exists: NODATA, not NXDOMAIN.
    assert _ask(server, "sub.example.test", "A").rcode() == dns.rcode.NOERROR
    txt = _ask(server, "example.test", "TXT", tcp=True)
    assert [len(s) for s in txt.answer[0][0].strings] == [255, 45]
    assert txt.flags & dns.flags.AA
    assert server.tcp_queries == 1

"""Story: several providers, direct MX delivery and DKIM, against real servers on loopback.

Upstream SMTP servers and a DNS server are started by the tests; the relay fails over
between providers, opens breakers, honours rate limits and routes, resolves MX hosts,
and signs what it sends (verified from the received bytes against the served TXT).
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import dkim
import dns.resolver
import pytest

from fakes.dns import DnsServer
from fakes.upstream import Upstream
from mailgate.delivery.dkim import generate_key

MSG = b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: engine\r\n\r\nhello\r\n"


def provider(name: str, port: int, priority: int = 10, **extra) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {
        "name": name,
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "priority": priority,
        **extra,
    }


def submit(relay, rcpts: list[str], data: bytes = MSG, sender: str = "app@example.com") -> str:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
        assert client.sendmail(sender, rcpts, data) == {}
    return relay.call(relay.store.list_messages(limit=1))[0]["id"]


def events(relay, qid: str) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(e["type"], e["provider"], e["response"]) for e in relay.events(qid)]


@pytest.fixture
def two_upstreams():  # type: ignore[no-untyped-def]
    with Upstream() as a, Upstream() as b:
        yield a, b


# ---------------------------------------------------------------- failover


@pytest.mark.parametrize(
    ("fault", "reply_start"),
    [
        ({"mail_reply": "421 4.7.0 Try again later"}, "421 4.7.0"),
        ({"data_reply": "451 4.3.0 Local error"}, "451 4.3.0"),
        ({"data_reply": "554 5.3.0 Provider misconfigured"}, "554 5.3.0"),
        ({"mail_reply": "550 5.7.1 Sender rejected by provider policy"}, "550 5.7.1"),
    ],
)
def test_fails_over_to_the_next_provider(relay_factory, two_upstreams, fault, reply_start) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    for key, value in fault.items():
        setattr(a.faults, key, value)
    relay = relay_factory(providers=[provider("a", a.port, 10), provider("b", b.port, 20)])
    qid = submit(relay, ["x@dest.test"])
    relay.wait_status(qid, lambda s: s == {"x@dest.test": "sent"})
    assert len(b.received) == 1 and len(a.received) == 0
    ev = events(relay, qid)
    assert ev[0][0] == "queued"
    assert ev[1][0] == "failover" and ev[1][1] == "a" and ev[1][2].startswith(reply_start)
    assert ev[2][:2] == ("sent", "b")
    assert relay.message(qid)["deliveries"][0]["attempts"] == 1


def test_auth_failure_and_refused_connection_fail_over(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream(auth=("u", "right")) as a, Upstream() as c, Upstream() as dead:
        dead.stop_listening()
        relay = relay_factory(
            providers=[
                provider("dead", dead.port, 10),
                provider("auth", a.port, 20, username="u", password="wrong"),
                provider("ok", c.port, 30),
            ]
        )
        qid = submit(relay, ["x@dest.test"])
        relay.wait_status(qid, lambda s: s == {"x@dest.test": "sent"})
        ev = events(relay, qid)
        assert [e[:2] for e in ev] == [
            ("queued", ""),
            ("failover", "dead"),
            ("failover", "auth"),
            ("sent", "ok"),
        ]
        assert ev[1][2].startswith("451 4.4.1") and ev[2][2].startswith("535")


def test_rcpt_5xx_bounces_without_failover(relay_factory, two_upstreams) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    a.faults.rcpt_replies["gone@dest.test"] = "550 5.1.1 no such user"
    relay = relay_factory(providers=[provider("a", a.port, 10), provider("b", b.port, 20)])
    qid = submit(relay, ["gone@dest.test", "ok@dest.test"])
    statuses = relay.wait_status(qid, lambda s: "queued" not in s.values())
    assert statuses == {"gone@dest.test": "bounced", "ok@dest.test": "sent"}
    assert b.mail_commands == 0


def test_every_provider_refusing_for_good_bounces_with_the_last_reply(
    relay_factory, two_upstreams
) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    a.faults.data_reply = "554 5.7.1 rejected by a"
    b.faults.data_reply = "554 5.7.1 rejected by b"
    relay = relay_factory(providers=[provider("a", a.port, 10), provider("b", b.port, 20)])
    qid = submit(relay, ["x@dest.test"])
    relay.wait_status(qid, lambda s: s == {"x@dest.test": "bounced"})
    d = relay.message(qid)["deliveries"][0]
    assert d["provider"] == "b" and d["last_response"] == "554 5.7.1 rejected by b"


def test_every_provider_failing_temporarily_defers(relay_factory, two_upstreams) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    a.faults.mail_reply = "421 4.7.0 busy"
    b.faults.data_reply = "554 5.7.1 rejected by b"
    relay = relay_factory(providers=[provider("a", a.port, 10), provider("b", b.port, 20)])
    qid = submit(relay, ["x@dest.test"])
    relay.wait_status(qid, lambda s: s == {"x@dest.test": "deferred"})


def test_breaker_opens_and_skips_the_failing_provider(relay_factory, two_upstreams) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    a.faults.mail_reply = "421 4.7.0 down for maintenance"
    relay = relay_factory(
        providers=[
            provider("a", a.port, 10, breaker_failures=2, breaker_cooldown="30s"),
            provider("b", b.port, 20),
        ],
        delivery={"concurrency": 1, "claim_batch": 1},
    )
    ids = [submit(relay, [f"r{i}@dest.test"]) for i in range(6)]
    for qid in ids:
        relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    assert a.rejected_mail == 2  # then the breaker kept mail away from it
    assert len(b.received) == 6


def test_breaker_probes_again_after_cooldown(relay_factory, two_upstreams) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    a.faults.mail_reply = "421 4.7.0 down"
    relay = relay_factory(
        providers=[
            provider("a", a.port, 10, breaker_failures=1, breaker_cooldown="500ms"),
            provider("b", b.port, 20),
        ],
        delivery={"concurrency": 1, "claim_batch": 1},
    )
    relay.wait_status(submit(relay, ["r1@dest.test"]), lambda s: s == {"r1@dest.test": "sent"})
    a.faults.mail_reply = None  # a recovers
    time.sleep(0.6)
    relay.wait_status(submit(relay, ["r2@dest.test"]), lambda s: s == {"r2@dest.test": "sent"})
    assert [r.rcpt_tos for r in a.received] == [["r2@dest.test"]]


def test_rate_limit_paces_a_provider(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = relay_factory(providers=[provider("up", up.port, rate="5/s")])
        # Timed from before the first submission: the first delivery can start while the
        # others are still being submitted (a slow machine made this test flaky).
        started = time.monotonic()
        for i in range(10):
            submit(relay, [f"r{i}@dest.test"])
        up.wait_for(10, timeout=20)
        # A burst of 5 (one second's worth), then 5 per second: the last 5 need ~1 s.
        assert time.monotonic() - started >= 0.95


def test_routes_send_domains_to_chosen_providers(relay_factory, two_upstreams) -> None:  # type: ignore[no-untyped-def]
    a, b = two_upstreams
    relay = relay_factory(
        providers=[provider("a", a.port, 10), provider("b", b.port, 20)],
        routes=[{"recipient_domains": ["vip.test", "*.vip.test"], "providers": ["b"]}],
    )
    qid = submit(relay, ["x@dest.test", "y@vip.test", "z@mail.vip.test"])
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    assert [r.rcpt_tos for r in a.received] == [["x@dest.test"]]
    assert [sorted(r.rcpt_tos) for r in b.received] == [["y@vip.test", "z@mail.vip.test"]]


# -------------------------------------------------------------------- MX


@pytest.fixture
def mx_world():  # type: ignore[no-untyped-def]
    """DNS for a few destination domains; MX hosts on distinct loopback addresses."""
    with DnsServer() as dns_server, Upstream(host="127.0.0.3") as mx2:
        d = dns_server
        d.add("dest.test", "MX", "10 mx1.dest.test.")
        d.add("dest.test", "MX", "20 mx2.dest.test.")
        d.add("mx1.dest.test", "A", "127.0.0.2")  # nothing listens there: refused
        d.add("mx2.dest.test", "A", "127.0.0.3")
        d.add("implicit.test", "A", "127.0.0.3")
        d.add("nullmx.test", "MX", "0 .")
        d.set_rcode("broken.test", "SERVFAIL")
        yield d, mx2


def mx_relay(relay_factory, dns_server, port: int, **extra):  # type: ignore[no-untyped-def]
    return relay_factory(
        providers=[{"name": "direct", "kind": "mx", "port": port, **extra}],
        dns={"nameservers": [dns_server.nameserver], "timeout": "1s", "lifetime": "2s"},
    )


def test_mx_delivery_tries_hosts_in_preference_order(relay_factory, mx_world) -> None:  # type: ignore[no-untyped-def]
    dns_server, mx2 = mx_world
    relay = mx_relay(relay_factory, dns_server, mx2.port)
    qid = submit(relay, ["a@dest.test", "b@implicit.test"])
    statuses = relay.wait_status(qid, lambda s: set(s.values()) == {"delivered"})
    assert statuses == {"a@dest.test": "delivered", "b@implicit.test": "delivered"}
    assert sorted(tuple(r.rcpt_tos) for r in mx2.received) == [
        ("a@dest.test",),
        ("b@implicit.test",),
    ]
    assert dns_server.queries[("dest.test", "MX")] == 1


def test_mx_null_mx_and_nxdomain_bounce_servfail_defers(relay_factory, mx_world) -> None:  # type: ignore[no-untyped-def]
    dns_server, mx2 = mx_world
    relay = mx_relay(relay_factory, dns_server, mx2.port)
    qid = submit(relay, ["a@nullmx.test", "b@nowhere.test", "c@broken.test"])
    statuses = relay.wait_status(qid, lambda s: "queued" not in s.values())
    assert statuses == {
        "a@nullmx.test": "bounced",
        "b@nowhere.test": "bounced",
        "c@broken.test": "deferred",
    }
    by = {d["recipient"]: d["last_response"] for d in relay.message(qid)["deliveries"]}
    assert " 5.1.10 " in by["a@nullmx.test"]
    assert " 5.1.2 " in by["b@nowhere.test"]
    assert by["c@broken.test"].startswith("451 4.4.3")


def test_mx_require_tls_defers_when_the_server_has_no_starttls(relay_factory, mx_world) -> None:  # type: ignore[no-untyped-def]
    dns_server, mx2 = mx_world
    relay = mx_relay(relay_factory, dns_server, mx2.port, tls_policy="require")
    qid = submit(relay, ["a@implicit.test"])
    relay.wait_status(qid, lambda s: s == {"a@implicit.test": "deferred"})
    assert mx2.received == []


def test_mx_opportunistic_starttls_with_any_certificate(relay_factory, tls_files) -> None:  # type: ignore[no-untyped-def]
    with (
        DnsServer() as d,
        Upstream(host="127.0.0.3", tls_context=tls_files["server_context"]) as mx,
    ):
        d.add("tls.test", "MX", "10 mx.tls.test.")
        d.add("mx.tls.test", "A", "127.0.0.3")
        relay = mx_relay(relay_factory, d, mx.port)
        qid = submit(relay, ["a@tls.test"])
        relay.wait_status(qid, lambda s: s == {"a@tls.test": "delivered"})


# ------------------------------------------------------------------ DKIM


def _dkim_dns(dns_server: DnsServer):  # type: ignore[no-untyped-def]
    resolver = dns.resolver.Resolver(configure=False)
    host, port = dns_server.address
    resolver.nameservers = [host]
    resolver.port = port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return dnsfunc


def test_dkim_rsa_and_ed25519_signatures_verify(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rsa_pem, rsa_txt = generate_key("rsa", 2048)
    ed_pem, ed_txt = generate_key("ed25519")
    (tmp_path / "rsa.pem").write_bytes(rsa_pem)
    (tmp_path / "ed.pem").write_bytes(ed_pem)
    with DnsServer() as d, Upstream() as up:
        d.add("rsa1._domainkey.example.com", "TXT", rsa_txt)
        d.add("ed1._domainkey.example.com", "TXT", ed_txt)
        relay = relay_factory(
            providers=[provider("up", up.port)],
            domains=[
                {
                    "name": "example.com",
                    "dkim_selector": "rsa1",
                    "dkim_key": str(tmp_path / "rsa.pem"),
                    "dkim_keys": [{"selector": "ed1", "key": str(tmp_path / "ed.pem")}],
                }
            ],
        )
        long_subject = "Subject: " + " ".join(["långt ämne"] * 30)
        body = (
            "From: App <app@example.com>\r\nTo: a@dest.test\r\n"
            f"{long_subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße aus Köln — 8-bit body\r\n.leading dot\r\n"
        ).encode()
        submit(relay, ["a@dest.test"], body)
        (got,) = up.wait_for(1)
        sigs = [h for h in got.message.get_all("DKIM-Signature")]
        assert len(sigs) == 2
        assert "a=rsa-sha256" in sigs[0] and "a=ed25519-sha256" in sigs[1]
        assert all(" l=" not in s and ";l=" not in s.replace(" ", "") for s in sigs)
        dnsfunc = _dkim_dns(d)
        verifier = dkim.DKIM(got.data)
        assert verifier.verify(idx=0, dnsfunc=dnsfunc)
        assert verifier.verify(idx=1, dnsfunc=dnsfunc)
        tampered = got.data.replace(b"Gr\xc3\xbc\xc3\x9fe", b"Hallo")
        assert tampered != got.data
        with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
            dkim.DKIM(tampered).verify(idx=0, dnsfunc=dnsfunc)


def test_dkim_signature_is_made_once_and_reused_by_retries(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pem, _txt = generate_key("ed25519")
    (tmp_path / "k.pem").write_bytes(pem)
    with Upstream() as up:
        up.faults.drop_after_data = 1
        relay = relay_factory(
            providers=[provider("up", up.port)],
            domains=[
                {"name": "example.com", "dkim_selector": "s1", "dkim_key": str(tmp_path / "k.pem")}
            ],
        )
        qid = submit(relay, ["a@dest.test"])
        relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
        first = up.dropped[0].message["DKIM-Signature"]
        second = up.received[0].message["DKIM-Signature"]
        assert first and first == second


def test_mail_from_an_unconfigured_from_domain_is_not_signed(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pem, _txt = generate_key("ed25519")
    (tmp_path / "k.pem").write_bytes(pem)
    with Upstream() as up:
        relay = relay_factory(
            providers=[provider("up", up.port)],
            domains=[
                {"name": "example.com", "dkim_selector": "s1", "dkim_key": str(tmp_path / "k.pem")},
                {"name": "example.org"},
            ],
        )
        data = b"From: app@example.org\r\nTo: a@dest.test\r\nSubject: x\r\n\r\nx\r\n"
        submit(relay, ["a@dest.test"], data, sender="app@example.org")
        (got,) = up.wait_for(1)
        assert got.message["DKIM-Signature"] is None


def test_a_hanging_provider_does_not_hold_mail_once_its_breaker_opens(relay_factory) -> None:  # type: ignore[no-untyped-def]
    import socket

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(100)  # accepts connections (the kernel does), never says a word
    try:
        with Upstream() as backup:
            relay = relay_factory(
                providers=[
                    provider(
                        "hang",
                        blackhole.getsockname()[1],
                        10,
                        connect_timeout="1s",
                        max_connections=2,
                        breaker_failures=2,
                        breaker_cooldown="60s",
                    ),
                    provider("backup", backup.port, 20),
                ],
                delivery={"concurrency": 40},
            )
            started = time.monotonic()
            for i in range(20):
                submit(relay, [f"r{i}@dest.test"])
            backup.wait_for(20, timeout=15)
            # Two 1 s timeouts open the breaker; the deliveries queued behind them go on
            # at once instead of waiting 1 s each, two at a time (~10 s).
            assert time.monotonic() - started < 6
    finally:
        blackhole.close()

"""Story: queued mail goes to an upstream SMTP provider that fails in every usual way."""

from __future__ import annotations

import asyncio
import smtplib
import socketserver
import threading
import time

import pytest

from fakes.upstream import Upstream

MSG = b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: upstream\r\n\r\nhello\r\n"


@pytest.fixture(
    params=[(True, False), (True, True), (False, False)], ids=["pipelined", "chunked", "one-by-one"]
)
def upstream(request):  # type: ignore[no-untyped-def]
    """Each fault three ways: an upstream that offers PIPELINING, one that offers CHUNKING
    too (the message goes in a BDAT chunk), and one that offers neither."""
    pipelining, chunking = request.param
    with Upstream(pipelining=pipelining, chunking=chunking) as up:
        yield up


def smtp_provider(port: int, **extra) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        {
            "name": "up",
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            **extra,
        }
    ]


def submit(relay, rcpts: list[str], data: bytes = MSG) -> str:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
        client.ehlo()
        assert client.mail("app@example.com")[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, reply = client.data(data)
        assert code == 250
    # The queue id from the reply to DATA: the newest message may already be a DSN.
    return reply.decode().rsplit("queued as ", 1)[1].strip()


def test_delivered_upstream_with_one_transaction_for_all_recipients(
    relay_factory, upstream
) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["a@dest.test", "b@dest.test", "c@other.test"])
    (got,) = upstream.wait_for(1)
    assert got.rcpt_tos == ["a@dest.test", "b@dest.test", "c@other.test"]
    assert got.mail_from == "app@example.com"
    assert got.queue_id == qid
    assert upstream.bdat_transactions == (1 if upstream.chunking else 0)
    statuses = relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    assert len(statuses) == 3
    d = relay.message(qid)["deliveries"][0]
    assert d["provider"] == "up" and d["last_response"].startswith("250 2.0.0")
    assert d["attempts"] == 1


def test_the_message_arrives_byte_for_byte(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    """Lines that start with a dot, or are one, arrive as they were sent: doubled and
    undoubled after DATA, as they are in a BDAT chunk."""
    body = b".leading dot\r\n.\r\n..two\r\nlast line\r\n"
    relay = relay_factory(providers=smtp_provider(upstream.port))
    submit(relay, ["a@dest.test"], MSG.replace(b"hello\r\n", body))
    (got,) = upstream.wait_for(1)
    assert got.data.endswith(b"\r\n\r\n" + body)


def test_connections_are_reused_across_messages(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(providers=smtp_provider(upstream.port, max_connections=1))
    for i in range(5):
        submit(relay, [f"r{i}@dest.test"])
    upstream.wait_for(5)
    assert upstream.connections == 1


def test_421_at_mail_defers_then_delivers(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.mail_reply = "421 4.7.0 Try again later"
    upstream.faults.mail_fail_times = 2
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
    types = [e["type"] for e in relay.events(qid)]
    assert types == ["queued", "deferred", "deferred", "sent"]
    deferred = [e for e in relay.events(qid) if e["type"] == "deferred"]
    assert deferred[0]["response"].startswith("421 4.7.0 Try again later")
    assert relay.message(qid)["deliveries"][0]["attempts"] == 3


def test_451_after_data_defers(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.data_reply = "451 4.3.0 Local error in processing"
    upstream.faults.data_fail_times = 1
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
    assert [e["type"] for e in relay.events(qid)] == ["queued", "deferred", "sent"]
    assert len(upstream.received) == 1


def test_550_for_one_recipient_bounces_only_that_one(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: no such user"
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["gone@dest.test", "ok@dest.test"])
    statuses = relay.wait_status(qid, lambda s: "queued" not in s.values())
    assert statuses == {"gone@dest.test": "bounced", "ok@dest.test": "sent"}
    received = upstream.wait_for(2)  # the message, and the DSN to its sender
    assert sorted(r.rcpt_tos[0] for r in received) == ["app@example.com", "ok@dest.test"]
    bounced = next(d for d in relay.message(qid)["deliveries"] if d["status"] == "bounced")
    assert bounced["last_response"] == "550 5.1.1 <gone@dest.test>: no such user"
    assert bounced["attempts"] == 1


def test_554_after_data_bounces(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.data_reply = "554 5.7.1 Message rejected as spam"
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "bounced"})
    assert [e["type"] for e in relay.events(qid)] == ["queued", "bounced"]


def test_550_that_says_try_later_is_not_a_bounce(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.rcpt_replies["busy@dest.test"] = "550 5.7.1 Rate limited, try again later"
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["busy@dest.test"])
    relay.wait_status(qid, lambda s: s == {"busy@dest.test": "deferred"})


def test_dropped_connection_after_data_is_retried(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.drop_after_data = 1
    relay = relay_factory(providers=smtp_provider(upstream.port))
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
    assert len(upstream.dropped) == 1  # at-least-once: the upstream may have kept it
    assert len(upstream.received) == 1
    deferred = [e for e in relay.events(qid) if e["type"] == "deferred"]
    assert deferred and deferred[0]["response"].startswith("451 4.4.2")


def test_a_pooled_connection_dropped_at_mail_is_tried_again_on_a_new_one(upstream) -> None:  # type: ignore[no-untyped-def]
    """Two connections pooled, then the server drops the next two transactions at MAIL (a
    restart): the retry goes to a new connection, not to the other pooled one; that one
    dropped too ended in an AssertionError, a deferral saying "internal error"."""
    from mailgate.config_sending import ProviderSettings
    from mailgate.models import Outcome
    from mailgate.transports.smtp import SmtpTransport

    settings = ProviderSettings.model_validate(smtp_provider(upstream.port)[0])

    async def main() -> None:
        transport = SmtpTransport(settings, local_hostname="relay.test")
        try:
            two = [transport.deliver("app@example.com", [f"r{i}@dest.test"], MSG) for i in (1, 2)]
            await asyncio.gather(*two)
            assert upstream.connections == 2
            upstream.faults.drop_at_mail = 2
            (result,) = await transport.deliver("app@example.com", ["r3@dest.test"], MSG)
            assert result.outcome is Outcome.TEMPORARY, result
            assert upstream.connections == 3  # the second try was on a new connection
            (result,) = await transport.deliver("app@example.com", ["r4@dest.test"], MSG)
            assert result.outcome is Outcome.SENT, result
        finally:
            await transport.close()

    asyncio.run(main())


def test_slow_upstream_times_out_and_defers(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.data_delay = 2.0
    relay = relay_factory(providers=smtp_provider(upstream.port, data_timeout="300ms"))
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "deferred"}, timeout=10)
    (event,) = [e for e in relay.events(qid) if e["type"] == "deferred"][:1]
    assert event["response"].startswith("451 4.4.2")
    upstream.faults.data_delay = 0
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)


def test_an_attempt_longer_than_its_lease_is_sent_and_recorded_once(
    relay_factory, upstream
) -> None:  # type: ignore[no-untyped-def]
    """The upstream takes 3 s to answer and [delivery] lease is 1 s: the lease is renewed
    while the attempt is in flight. It expired before, and the next claim sent the message
    again and recorded both results (two sent events, webhooks, DSNs)."""
    upstream.faults.data_delay = 3.0
    relay = relay_factory(
        providers=smtp_provider(upstream.port, data_timeout="10s"), delivery={"lease": "1s"}
    )
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=20)
    time.sleep(4)  # room for a second attempt to arrive, were one made
    assert len(upstream.received) == 1
    assert [e["type"] for e in relay.events(qid)] == ["queued", "sent"]


def test_a_message_bigger_than_a_claim_goes_out_whole_at_once(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    """Six recipients, claims of four, a slow upstream: the second claim's two recipients
    are attempted beside the first four, not left leased until the lease ran out."""
    upstream.faults.data_delay = 1.0
    relay = relay_factory(
        providers=smtp_provider(upstream.port), delivery={"claim_batch": 4, "lease": "2m"}
    )
    rcpts = [f"r{i}@dest.test" for i in range(6)]
    qid = submit(relay, rcpts)
    relay.wait_status(qid, lambda s: s == dict.fromkeys(rcpts, "sent"), timeout=15)


def test_upstream_down_then_recovers(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.stop_listening()
    # The retries may open the breaker before the upstream is back: a short cooldown lets
    # its half-open probe find the upstream (the default 30 s outlasts the wait below).
    relay = relay_factory(providers=smtp_provider(upstream.port, breaker_cooldown="300ms"))
    ids = [submit(relay, [f"r{i}@dest.test"]) for i in range(3)]
    for qid in ids:
        relay.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    ev = next(e for e in relay.events(ids[0]) if e["type"] == "deferred")
    assert ev["response"].startswith("451 4.4.1")
    upstream.start_listening()
    for qid in ids:
        relay.wait_status(qid, lambda s: set(s.values()) == {"sent"}, timeout=15)
    assert sorted(upstream.by_queue_id()) == sorted(ids)


def test_gives_up_after_max_age(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.mail_reply = "451 4.3.0 Not now"
    relay = relay_factory(
        providers=smtp_provider(upstream.port),
        retry={"min_backoff": "100ms", "max_backoff": "200ms", "max_age": "700ms"},
    )
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "failed"}, timeout=10)
    types = [e["type"] for e in relay.events(qid)]
    assert types[0] == "queued" and types[-1] == "failed" and "deferred" in types


def test_a_retried_failure_gets_a_fresh_max_age(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    """A recipient failed for its age and retried (the dashboard, MessagePipe's retry)
    was failed again by its first attempt, with a second DSN: now its age counts from the
    retry, so it is deferred and goes out once the upstream takes it."""
    upstream.faults.mail_reply = "451 4.3.0 Not now"
    relay = relay_factory(
        providers=smtp_provider(upstream.port, breaker_cooldown="100ms"),
        retry={"min_backoff": "200ms", "max_backoff": "300ms", "max_age": "2s"},
    )
    qid = submit(relay, ["a@dest.test"])
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "failed"}, timeout=15)
    # Past max_age from the acceptance (it failed for that); the retry is due at once.
    done = relay.call(relay.store.requeue([(qid, 0)], time.time()))
    assert done.requeued == [(qid, 0, "a@dest.test")]
    assert relay.app.scheduler is not None
    relay.loop.call_soon_threadsafe(relay.app.scheduler.wake)
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "deferred"}, timeout=10)
    upstream.faults.mail_reply = None
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=10)
    types = [e["type"] for e in relay.events(qid)]
    assert types.count("failed") == 1 and types[-1] == "sent", types


def test_provider_auth(relay_factory) -> None:  # type: ignore[no-untyped-def]
    import os

    # Set before the relay starts: its delivery process reads its environment then.
    os.environ["UP_PASS"] = "s3cret"
    with Upstream(auth=("relayuser", "s3cret")) as up:
        relay = relay_factory(
            providers=smtp_provider(up.port, username="relayuser", password_env="UP_PASS")
        )
        try:
            qid = submit(relay, ["a@dest.test"])
            relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
        finally:
            del os.environ["UP_PASS"]


def test_provider_auth_failure_defers_not_bounces(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream(auth=("relayuser", "s3cret")) as up:
        relay = relay_factory(
            providers=smtp_provider(up.port, username="relayuser", password="wrong")
        )
        qid = submit(relay, ["a@dest.test"])
        relay.wait_status(qid, lambda s: s == {"a@dest.test": "deferred"})
        ev = next(e for e in relay.events(qid) if e["type"] == "deferred")
        assert ev["response"].startswith("535")


def test_new_mail_is_not_stuck_behind_retries(relay_factory, upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.faults.rcpt_replies = {f"slow{i}@dest.test": "451 4.2.0 later" for i in range(20)}
    relay = relay_factory(providers=smtp_provider(upstream.port))
    for i in range(20):
        submit(relay, [f"slow{i}@dest.test"])
    started = time.monotonic()
    qid = submit(relay, ["fresh@dest.test"])
    relay.wait_status(qid, lambda s: s == {"fresh@dest.test": "sent"})
    assert time.monotonic() - started < 5


class _RawUpstream(socketserver.StreamRequestHandler):
    """Answers RCPT with bytes no store can hold as they are (not UTF-8, a NUL)."""

    def handle(self) -> None:
        self.wfile.write(b"220 raw.test ESMTP\r\n")
        for line in self.rfile:
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-raw.test\r\n250 PIPELINING\r\n")
            elif verb == b"RCPT":
                self.wfile.write(b"550 5.1.1 <a@dest.test>: no such user \xff\xfe\x00 here\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_an_upstream_reply_that_is_not_utf8_is_recorded_readably(relay_factory) -> None:  # type: ignore[no-untyped-def]
    """aiosmtplib hands such bytes over as surrogates: committed as they were, the result
    could never be recorded and the delivery went out again after every lease."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawUpstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        relay = relay_factory(providers=smtp_provider(server.server_address[1]))
        qid = submit(relay, ["a@dest.test"])
        relay.wait_status(qid, lambda s: set(s.values()) == {"bounced"})
        d = relay.message(qid)["deliveries"][0]
        assert d["last_response"] == "550 5.1.1 <a@dest.test>: no such user \ufffd\ufffd here"
    finally:
        server.shutdown()
        server.server_close()

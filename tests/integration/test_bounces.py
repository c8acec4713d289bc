"""Story: mail that cannot be delivered comes back to its sender as a DSN (RFC 3464)."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

from fakes.upstream import Upstream

MSG = (
    b"From: App <app@example.com>\r\nTo: gone@dest.test, ok@dest.test\r\n"
    b"Subject: Your invoice\r\nX-Custom: kept\r\n\r\nSecret body text\r\n"
)


def upstream_provider(port: int) -> list[dict]:  # type: ignore[type-arg]
    return [{"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": port, "tls": "none"}]


def test_bounce_sends_a_dsn_to_the_sender(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        up.faults.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: no such user"
        relay = relay_factory(providers=upstream_provider(up.port))
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", ["gone@dest.test", "ok@dest.test"], MSG)
        received = up.wait_for(2)
        dsn_mail = next(r for r in received if r.mail_from in ("", "<>"))
        assert dsn_mail.rcpt_tos == ["app@example.com"]
        dsn = email.message_from_bytes(dsn_mail.data, policy=email.policy.default)
        assert dsn.get_content_type() == "multipart/report"
        assert dsn.get_param("report-type") == "delivery-status"
        assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@relay.test"
        assert dsn["Auto-Submitted"] == "auto-replied"
        parts = list(dsn.iter_parts())
        assert [p.get_content_type() for p in parts] == [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers",
        ]
        status = parts[1].as_string()
        assert "Final-Recipient: rfc822; gone@dest.test" in status
        assert "Action: failed" in status and "Status: 5.1.1" in status
        assert "smtp; 550 5.1.1 <gone@dest.test>: no such user" in status
        assert "ok@dest.test" not in status  # delivered: not in the report
        original = parts[2].get_content() if hasattr(parts[2], "get_content") else ""
        raw_headers = dsn_mail.data.decode()
        assert "Subject: Your invoice" in raw_headers and "X-Custom: kept" in raw_headers
        assert "Secret body text" not in raw_headers  # headers only, never the body
        assert original is not None


def test_no_dsn_for_a_dsn_or_the_null_sender(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        # The sender's own address is gone too: its DSN bounces and must not loop.
        up.faults.rcpt_replies["gone@dest.test"] = "550 5.1.1 no such user"
        up.faults.rcpt_replies["app@example.com"] = "550 5.1.1 no such user"
        relay = relay_factory(providers=upstream_provider(up.port))
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", ["gone@dest.test"], MSG)
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = relay.call(relay.store.list_messages(limit=10))
            if len(rows) == 2 and all(r["status"] == "bounced" for r in rows):
                break
            time.sleep(0.05)
        rows = relay.call(relay.store.list_messages(limit=10))
        assert sorted(r["source"] for r in rows) == ["dsn", "smtp"]
        assert all(r["status"] == "bounced" for r in rows)
        time.sleep(0.5)
        assert len(relay.call(relay.store.list_messages(limit=10))) == 2  # no DSN for the DSN


def test_verp_and_asynchronous_bounces(relay_factory) -> None:  # type: ignore[no-untyped-def]
    from mailgate.delivery.bounce import FailedRecipient, build_dsn

    with Upstream() as up:
        relay = relay_factory(
            providers=upstream_provider(up.port),
            bounces={"verp": True, "domain": "bounces.example.com"},
        )
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", ["a@dest.test", "b@dest.test"], MSG)
        got = up.wait_for(2)
        qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
        # One transaction per recipient, each with its own return path.
        paths = sorted((r.mail_from, tuple(r.rcpt_tos)) for r in got)
        assert paths == [
            (f"bounces+{qid}.0@bounces.example.com", ("a@dest.test",)),
            (f"bounces+{qid}.1@bounces.example.com", ("b@dest.test",)),
        ]
        relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})

        # Later, b's server sends a DSN back to b's return path.
        report = build_dsn(
            original=MSG,
            queue_id="remote-queue",
            envelope_sender=f"bounces+{qid}.1@bounces.example.com",
            hostname="mx.dest.test",
            failures=[
                FailedRecipient(
                    recipient="b@dest.test",
                    status="5.1.1",
                    diagnostic="550 5.1.1 <b@dest.test>: user unknown",
                    last_attempt=0,
                )
            ],
            now=0,
        )
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.ehlo("mx.dest.test")
            assert c.mail("<>")[0] == 250
            code, msg = c.rcpt("someone@example.com")
            assert (code, msg[:5]) == (550, b"5.1.1")  # only bounce addresses take bounces
            assert c.rcpt(f"bounces+{qid}.1@bounces.example.com")[0] == 250
            code, msg = c.data(report)
            assert (code, msg) == (250, b"2.0.0 Bounce received")
        statuses = relay.wait_status(qid, lambda s: s["b@dest.test"] == "bounced")
        assert statuses == {"a@dest.test": "sent", "b@dest.test": "bounced"}
        last = relay.events(qid)[-1]
        assert (last["type"], last["recipient"], last["detail"]) == (
            "bounced",
            "b@dest.test",
            "asynchronous",
        )
        assert last["response"] == "550 5.1.1 <b@dest.test>: user unknown"  # said once
        assert relay.call(relay.store.suppressions.get("b@dest.test")) is not None


def test_null_sender_is_refused_without_verp(relay) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("client.test")
        code, msg = c.mail("<>")
        assert code == 553 and msg.startswith(b"5.7.1") and b"null sender" in msg


def test_recipients_that_expire_together_make_one_dsn(relay_factory) -> None:  # type: ignore[no-untyped-def]
    """Every recipient of a message deferred until max_age: one DSN naming them all. Each
    recipient's retry was jittered on its own, so they drifted apart into separate claims,
    and a sender got a DSN for nearly every recipient (214 for 12 messages of 100)."""
    with Upstream() as up:
        for i in range(8):
            up.faults.rcpt_replies[f"r{i}@dest.test"] = "451 4.2.1 mailbox busy"
        relay = relay_factory(
            providers=upstream_provider(up.port),
            retry={"min_backoff": "100ms", "max_backoff": "300ms", "max_age": "2s", "jitter": 1},
        )
        rcpts = [f"r{i}@dest.test" for i in range(8)]
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", rcpts, b"Subject: many\r\n\r\nbody\r\n")
        dsn_mail = next(r for r in up.wait_for(1, timeout=15) if r.mail_from in ("", "<>"))
        up.faults.rcpt_replies.clear()
        status = dsn_mail.data.decode()
        assert all(f"Final-Recipient: rfc822; {r}" in status for r in rcpts), status
        time.sleep(1.0)  # nothing more comes: the other recipients were in that one DSN
        assert [r for r in up.received if r.mail_from in ("", "<>")] == [dsn_mail]

"""Story: every bounce and deferral gets a category (KumoMTA's names), shown by the API and
the CLI; only a permanent InvalidRecipient or BadDomain suppresses the address."""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
from click.testing import CliRunner

from fakes.serve import config_text, maildir_provider
from fakes.upstream import Upstream
from mailgate.cli import main

# recipient -> (the upstream's RCPT reply, expected status, category, suppressed)
CASES = {
    "gone@dest.test": (
        "550 5.1.1 <gone@dest.test>: Recipient address rejected: User unknown in local "
        "recipient table",
        "bounced",
        "InvalidRecipient",
        True,
    ),
    "nodomain@dest.test": (
        "550 5.1.2 <nodomain@dest.test>: Recipient address rejected: Domain not found",
        "bounced",
        "BadDomain",
        True,
    ),
    "disabled@dest.test": (
        "550 5.2.1 The email account that you tried to reach is disabled.",
        "bounced",
        "InactiveMailbox",
        False,
    ),
    "full@dest.test": (
        "552 5.2.2 The email account that you tried to reach is over quota.",
        "bounced",
        "QuotaIssues",
        False,
    ),
    "blocked@dest.test": (
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
        "bounced",
        "SpamBlock",
        False,
    ),
    "busy@dest.test": (
        "450 4.2.1 The user you are trying to contact is receiving mail too quickly.",
        "deferred",
        "TransientFailure",
        False,
    ),
    # "No such user" but "try again later": temporary, so never a suppression.
    "unsure@dest.test": (
        "550 5.1.1 unknown user or rate limited, try again later",
        "deferred",
        "InvalidRecipient",
        False,
    ),
}


def test_categories_in_api_cli_and_suppression(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        for rcpt, (reply, *_rest) in CASES.items():
            up.faults.rcpt_replies[rcpt] = reply
        relay = relay_factory(
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ],
            retry={"min_backoff": "1h", "max_backoff": "2h"},
        )
        key = relay.create_key("reader", scope="read")
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", [*CASES, "ok@dest.test"], b"Subject: c\r\n\r\nx\r\n")
        qid = next(
            m["id"] for m in relay.call(relay.store.list_messages(limit=5)) if m["source"] == "smtp"
        )
        expected = {rcpt: case[1] for rcpt, case in CASES.items()} | {"ok@dest.test": "sent"}
        relay.wait_status(qid, lambda s: s == expected)

        with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as h:
            detail = h.get(f"/v1/messages/{qid}").json()["data"]
            events = h.get(f"/v1/messages/{qid}/events").json()["data"]
        by_email = {r["email"]: r for r in detail["recipients"]}
        assert "bounce_category" not in by_email["ok@dest.test"]
        for rcpt, (_reply, status, category, suppressed) in CASES.items():
            assert by_email[rcpt]["status"] == status
            assert by_email[rcpt]["bounce_category"] == category, rcpt
            evt = next(e for e in events if e["recipient"] == rcpt and e["type"] == status)
            assert evt["metadata"]["category"] == category
            entry = relay.call(relay.store.suppressions.get(rcpt))
            assert (entry is not None) is suppressed, rcpt
            if entry is not None:
                assert entry.reason == "hard_bounce"
        queued = next(e for e in events if e["type"] == "queued")
        assert "category" not in queued["metadata"]

    cfg = tmp_path / "cli.toml"
    data = tmp_path / "data"
    cfg.write_text(config_text(data, maildir_provider("c", data / "m")))
    shown = CliRunner().invoke(main, ["queue", "show", qid, "--config", str(cfg)])
    assert shown.exit_code == 0, shown.output
    assert "gone@dest.test: bounced [InvalidRecipient] after 1 attempt(s)" in shown.output
    assert "busy@dest.test: deferred [TransientFailure]" in shown.output
    assert "[SpamBlock]" in shown.output


def test_asynchronous_bounce_gets_its_category(relay_factory) -> None:  # type: ignore[no-untyped-def]
    from mailgate.delivery.bounce import FailedRecipient, build_dsn

    with Upstream() as up:
        relay = relay_factory(
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ],
            bounces={"verp": True, "domain": "bounces.example.com"},
        )
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("app@example.com", ["a@dest.test", "b@dest.test"], b"Subject: c\r\n\r\nx")
        up.wait_for(2)
        qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
        relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
        for idx, rcpt, status, diagnostic in (
            (0, "a@dest.test", "5.2.2", "552 5.2.2 <a@dest.test>: mailbox full"),
            (1, "b@dest.test", "5.1.1", "550 5.1.1 <b@dest.test>: no such user"),
        ):
            report = build_dsn(
                original=b"Subject: c\r\n\r\n",
                queue_id="remote",
                envelope_sender=f"bounces+{qid}.{idx}@bounces.example.com",
                hostname="mx.dest.test",
                failures=[
                    FailedRecipient(
                        recipient=rcpt, status=status, diagnostic=diagnostic, last_attempt=0
                    )
                ],
                now=0,
            )
            with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
                c.sendmail("<>", [f"bounces+{qid}.{idx}@bounces.example.com"], report)
        relay.wait_status(qid, lambda s: set(s.values()) == {"bounced"})
        bounced = {e["recipient"]: e for e in relay.events(qid) if e["type"] == "bounced"}
        assert bounced["a@dest.test"]["category"] == "QuotaIssues"
        assert bounced["b@dest.test"]["category"] == "InvalidRecipient"
        assert relay.call(relay.store.suppressions.get("a@dest.test")) is None
        assert relay.call(relay.store.suppressions.get("b@dest.test")) is not None

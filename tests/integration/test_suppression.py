"""Story: an address hard-bounces, is suppressed, and new mail to it is refused."""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
from click.testing import CliRunner

from fakes.upstream import Upstream
from mailgate.cli import main


def test_hard_bounce_suppresses_and_later_mail_is_refused(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        up.faults.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: no such user"
        up.faults.rcpt_replies["spam@dest.test"] = "550 5.7.1 message refused by policy"
        relay = relay_factory(
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ]
        )
        key = relay.create_key("app")
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail(
                "app@example.com", ["gone@dest.test", "spam@dest.test"], b"Subject: 1\r\n\r\nx\r\n"
            )
        qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
        relay.wait_status(qid, lambda s: set(s.values()) == {"bounced"})
        entry = relay.call(relay.store.suppressions.get("gone@dest.test"))
        assert entry is not None and entry.reason == "hard_bounce" and entry.message_id == qid
        assert "5.1.1" in entry.detail
        # A policy refusal bounces the message but never suppresses the address.
        assert relay.call(relay.store.suppressions.get("spam@dest.test")) is None

        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.ehlo("client.test")
            c.mail("app@example.com")
            code, msg = c.rcpt("GONE@dest.test")
            assert (code, msg) == (
                550,
                b"5.7.1 Recipient address rejected: recipient is suppressed",
            )
            assert c.rcpt("other@dest.test")[0] == 250

        with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as h:
            r = h.post(
                "/v1/messages/send",
                json={
                    "from": "app@example.com",
                    "to": ["gone@dest.test", "ok@dest.test"],
                    "subject": "s",
                    "text": "t",
                },
            )
            assert r.status_code == 202
            assert r.json()["data"]["suppressed"] == ["gone@dest.test"]
            got = h.get(f"/v1/messages/{r.json()['data']['id']}").json()["data"]
            assert [x["email"] for x in got["recipients"]] == ["ok@dest.test"]
            r = h.post(
                "/v1/messages/send",
                json={
                    "from": "app@example.com",
                    "to": "gone@dest.test",
                    "subject": "s",
                    "text": "t",
                },
            )
            assert r.status_code == 422
            assert r.json()["error"]["code"] == "recipient_suppressed"


def test_suppressions_cli_and_a_running_relay(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    cfg = tmp_path / "cli.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[http]\nlisten = []\n[smtp]\nlisten = []\n'
        f'[[domains]]\nname = "example.com"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path}/m"\n'
    )
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "suppressions",
            "add",
            "Someone@Dest.test",
            "--reason",
            "complaint",
            "--note",
            "FBL",
            "--config",
            str(cfg),
        ],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["suppressions", "list", "--config", str(cfg)])
    assert (
        "someone@dest.test" in listed.output
        and "complaint" in listed.output
        and "FBL" in listed.output
    )
    relay.call(relay.app.suppressions.load())  # what the relay's periodic refresh does
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("client.test")
        c.mail("app@example.com")
        assert c.rcpt("someone@dest.test")[0] == 550
    removed = runner.invoke(
        main, ["suppressions", "remove", "someone@dest.test", "--config", str(cfg)]
    )
    assert removed.exit_code == 0
    relay.call(relay.app.suppressions.load())
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("client.test")
        c.mail("app@example.com")
        assert c.rcpt("someone@dest.test")[0] == 250
    again = runner.invoke(
        main, ["suppressions", "remove", "someone@dest.test", "--config", str(cfg)]
    )
    assert again.exit_code == 1
    bad = runner.invoke(main, ["suppressions", "add", "not-an-address", "--config", str(cfg)])
    assert bad.exit_code == 2

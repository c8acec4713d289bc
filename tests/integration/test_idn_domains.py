"""Story: a sending domain with a non-ASCII name (exämple.org). It is configured, compared
and DKIM-signed in its A-label form, so a client may give it either way: SMTP hands over
what the client wrote (SMTPUTF8), the API's address parser makes the A-labels. The API
refused it as "not a sending domain" in both forms, while SMTP took it."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import dkim
import httpx

from fakes.upstream import Upstream
from mailgate.delivery.dkim import generate_key

ACE = "xn--exmple-cua.org"


def test_an_idn_sending_domain_works_in_both_forms(relay_factory: Any, tmp_path: Path) -> None:
    pem, txt = generate_key("rsa", 2048)
    key = tmp_path / "dkim.pem"
    key.write_bytes(pem)
    with Upstream() as up:
        relay = relay_factory(
            http={"listen": ["127.0.0.1:0"]},
            domains=[{"name": "Exämple.org", "dkim_selector": "s1", "dkim_key": str(key)}],
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ],
        )
        assert relay.settings.domains[0].name == ACE
        api = {"Authorization": f"Bearer {relay.create_key('app')}"}
        for sender in ("zoe@exämple.org", f"zoe@{ACE}"):
            r = httpx.post(
                relay.http_url + "/v1/messages/send",
                json={"from": sender, "to": "a@dest.test", "subject": "Hi", "text": "Hello"},
                headers=api,
            )
            assert r.status_code == 202, r.text
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            message = "From: zoe@exämple.org\r\nTo: b@dest.test\r\nSubject: Hi\r\n\r\nHello\r\n"
            c.sendmail(
                "zoe@exämple.org", ["b@dest.test"], message.encode(), mail_options=["SMTPUTF8"]
            )
        got = up.wait_for(3)
        for received in got:
            assert b"d=" + ACE.encode() in received.data.replace(b"\r\n\t", b"").replace(b" ", b"")
            assert dkim.DKIM(received.data).verify(dnsfunc=lambda name, timeout=5: txt.encode())


def test_a_key_restricted_to_an_idn_domain_is_made_in_either_form(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailgate.cli import main

    cfg = tmp_path / "relay.toml"
    data = tmp_path / "data"
    cfg.write_text(
        f'[server]\ndata_dir = "{data}"\n[[domains]]\nname = "exämple.org"\n'
        f'[[providers]]\nname = "capture"\nkind = "maildir"\npath = "{data}/maildir"\n'
    )
    runner = CliRunner()
    for name, domain, sender in (("u", "exämple.org", "zoe@exämple.org"), ("a", ACE, f"zoe@{ACE}")):
        options = ["--name", name, "--domain", domain, "--default-from", sender]
        made = runner.invoke(main, ["keys", "create", "--config", str(cfg), *options])
        assert made.exit_code == 0, made.output
    listed = runner.invoke(main, ["keys", "list", "--config", str(cfg)])
    assert listed.output.count(ACE) >= 2, listed.output

"""Story: the relay logs for a log collector (``[server] log_format = "json"``).

Runs the real ``mailgate serve`` at log level debug, with secrets planted where they pass
through the relay: an API key used as SMTP AUTH password and as HTTP bearer, a provider
password, a webhook secret, a DKIM key, and a marker in a message body. Every line of the
log (the relay's and its children's) must be one JSON object, the delivery results must
carry their structured fields, and no secret may appear anywhere in the output.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.serve import ServeProcess
from fakes.upstream import Upstream

PROVIDER_PASSWORD = "Prov1derPassw0rd-PLANTED"
BODY_MARKER = "BODY-MARKER-PLANTED-7f3a"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_json_logs_carry_fields_and_no_secret(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    key_body = pem.decode().splitlines()[1]  # a line of the key's base64
    with Upstream(auth=("relayuser", PROVIDER_PASSWORD)) as up:
        config = tmp_path / "relay.toml"
        config.write_text(
            f"""
[server]
hostname = "relay.test"
data_dir = "{tmp_path / "data"}"
log_level = "debug"
log_format = "json"
[smtp]
listen = ["127.0.0.1:0"]
trusted_networks = []
[http]
listen = ["127.0.0.1:0"]
[[domains]]
name = "example.com"
dkim_selector = "s1"
dkim_key = "{tmp_path / "dkim.pem"}"
[[providers]]
name = "up"
kind = "smtp"
host = "127.0.0.1"
port = {up.port}
tls = "none"
username = "relayuser"
password = "{PROVIDER_PASSWORD}"
[webhooks]
allow_private = true
[[webhooks.endpoints]]
url = "http://127.0.0.1:9/hook"
secret = "{WEBHOOK_SECRET}"
"""
        )
        create = ["keys", "create", "--name", "app", "--config", str(config)]
        made = subprocess.run(
            [sys.executable, "-m", "mailgate.cli", *create],
            capture_output=True,
            text=True,
            check=True,
        )
        api_key = made.stdout.strip().splitlines()[-1]
        serve = ServeProcess(config, tmp_path / "serve.log")
        try:
            with smtplib.SMTP("127.0.0.1", serve.port, timeout=30) as c:
                c.ehlo("client.test")
                c.login("apikey", api_key)  # plain text on loopback
                body = (
                    f"From: a@example.com\r\nTo: r@dest.test\r\nSubject: s\r\n\r\n{BODY_MARKER}\r\n"
                )
                assert c.sendmail("a@example.com", ["r@dest.test"], body.encode()) == {}
            # A wrong password is logged as a failure, without the password.
            with (
                smtplib.SMTP("127.0.0.1", serve.port, timeout=30) as c,
                contextlib.suppress(smtplib.SMTPAuthenticationError),
            ):
                c.ehlo("client.test")
                c.login("apikey", "wrong-" + api_key)
            sent = httpx.post(
                f"http://127.0.0.1:{serve.http_port}/v1/messages/send",
                headers={"authorization": f"Bearer {api_key}"},
                json={
                    "from": "a@example.com",
                    "to": ["h@dest.test"],
                    "subject": "s",
                    "text": BODY_MARKER,
                },
                timeout=30,
            )
            assert sent.status_code == 202, sent.text
            up.wait_for(2, timeout=30)
            assert BODY_MARKER.encode() in up.received[0].data  # it did go through
            serve.wait_for(r"h@dest\.test> (status)=sent")
            serve.stop()
        finally:
            serve.close()
    output = (tmp_path / "serve.log").read_text()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
    results = [r for r in records if r.get("event") == "sent"]
    assert len(results) == 2
    for r in results:
        assert r["recipient_domain"] == "dest.test"
        assert r["provider"] == "up"
        assert r["attempt"] == 1
        assert r["reply"].startswith("250")
        assert r["duration_ms"] >= 0
        assert r["message_id"] in r["message"]
    queued = [r for r in records if r.get("event") == "queued"]
    assert {r["source"] for r in queued} == {"smtp", "http"}
    assert all(r["recipient_domains"] == ["dest.test"] for r in queued)
    # The children log in the same format: the delivery process's results are among them.
    assert {r["logger"] for r in results} == {"mailgate.delivery.attempt"}
    assert any("AUTH failed" in r["message"] for r in records)
    for secret in (api_key, PROVIDER_PASSWORD, BODY_MARKER, WEBHOOK_SECRET, key_body):
        assert secret not in output, secret

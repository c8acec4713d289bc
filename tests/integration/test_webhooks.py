"""Story: an application learns what became of its mail from signed webhooks (Standard
Webhooks), retried until its endpoint takes them, across a kill -9, and never sent to a
private address unless the operator allows it."""

from __future__ import annotations

import base64
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fakes.webhook_receiver import Received, Receiver, Reply
from mailgate.cli import main
from mailgate.config import load_settings
from mailgate.exceptions import ConfigError

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def hooks(rx: Receiver, **endpoint: Any) -> dict[str, Any]:
    return {"allow_private": True, "endpoints": [{"url": rx.url, "secret": SECRET, **endpoint}]}


def send(relay: Any, key: str, to: str = "ann@example.net", **extra: Any) -> str:
    body = {"from": "app@example.com", "to": to, "subject": "Hi", "text": "Hello", **extra}
    r = httpx.post(f"{relay.http_url}/v1/messages/send", json=body, headers={"x-api-key": key})
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["id"])


def types(got: list[Received]) -> list[str]:
    return [r.json["type"] for r in got]


def verified(secret: str, r: Received) -> dict[str, Any]:
    """What a receiver does: the spec's own library checks the signature and timestamp."""
    return Webhook(secret).verify(r.body, r.headers)  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    return {"url": request.getfixturevalue("pg_url")}


def test_every_event_is_signed_and_carries_the_message(
    relay_factory: Callable[..., Any], database: dict[str, Any]
) -> None:
    with Receiver() as rx:
        relay = relay_factory(webhooks=hooks(rx), database=database)
        key = relay.create_key()
        mid = send(relay, key, tags=["welcome"], metadata={"user": "42"})
        got = rx.wait(lambda g: "message.queued" in types(g) and "message.sent" in types(g))
        for r in got:
            verified(SECRET, r)
            assert r.headers["webhook-id"].startswith("msg_")
            assert r.headers["content-type"] == "application/json"
            assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 30
        queued = rx.of_type("message.queued")[0].json
        assert queued["timestamp"].endswith("Z")
        data = queued["data"]
        assert data["message_id"] == mid and data["recipient"] == "ann@example.net"
        assert data["tags"] == ["welcome"] and data["metadata"] == {"user": "42"}
        sent = rx.of_type("message.sent")[0].json["data"]
        assert sent["provider"] == "capture" and sent["reply"]
        # A forged or altered body does not verify.
        r = got[0]
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(r.body + b" ", r.headers)
        ids = [r.headers["webhook-id"] for r in got]
        assert len(set(ids)) == len(ids)


def test_only_the_subscribed_events_and_job_completed(
    relay_factory: Callable[..., Any], database: dict[str, Any]
) -> None:
    with Receiver() as rx:
        relay = relay_factory(
            webhooks=hooks(rx, events=["job.completed", "message.bounced"]), database=database
        )
        key = relay.create_key()
        body = {
            "from": "app@example.com",
            "to": ["a@example.net", "b@example.net"],
            "subject": "Hi",
            "text": "Hello",
        }
        r = httpx.post(
            f"{relay.http_url}/v1/messages/batch",
            json={"messages": [body]},
            headers={"x-api-key": key},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["job_id"]
        got = rx.wait(lambda g: "job.completed" in types(g))
        time.sleep(0.5)
        assert types(rx.received) == ["job.completed"]
        data = verified(SECRET, got[0])["data"]
        assert data["job_id"] == job_id and data["status"] == "completed"
        assert data["total"] == 2 and data["sent"] == 2 and data["failed"] == 0


def test_a_failing_endpoint_gets_the_webhook_later_with_the_same_id(
    relay_factory: Callable[..., Any],
) -> None:
    with Receiver() as rx:
        rx.script = [Reply(500)]
        relay = relay_factory(webhooks=hooks(rx, events=["message.queued"]))
        admin = relay.create_key("ops", scope="admin")
        send(relay, relay.create_key())
        got = rx.wait(lambda g: len(g) == 2, timeout=20)  # the first retry is after ~5 s
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        assert 3.5 < got[1].at - got[0].at < 8
        endpoint = httpx.get(f"{relay.http_url}/v1/webhooks", headers={"x-api-key": admin})
        (e,) = endpoint.json()["data"]
        assert e["source"] == "config" and e["enabled"] and "secret" not in e

        def done() -> list[dict[str, Any]]:
            return httpx.get(
                f"{relay.http_url}/v1/webhooks/{e['id']}/deliveries",
                headers={"x-api-key": admin},
            ).json()["data"]

        deadline = time.monotonic() + 5
        while done()[0]["status"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
        (d,) = done()
        assert d["status"] == "succeeded" and d["attempts"] == 2 and d["last_status"] == 200
        assert d["id"] == got[0].headers["webhook-id"] and d["event_type"] == "message.queued"


def test_an_endpoint_gets_at_most_max_in_flight_requests_at_once(
    relay_factory: Callable[..., Any],
) -> None:
    with Receiver() as rx:
        rx.script = [Reply(delay=0.3) for _ in range(8)]
        webhooks = {**hooks(rx, events=["message.queued"]), "max_in_flight": 3}
        relay = relay_factory(webhooks=webhooks)
        key = relay.create_key()
        ids = {send(relay, key, to=f"r{i}@example.net") for i in range(8)}
        got = rx.wait(lambda g: len(g) == 8)
        assert {r.json["data"]["message_id"] for r in got} == ids
        # Slow answers keep requests open: the limit is reached, never passed.
        assert rx.peak == 3


def test_a_410_disables_the_endpoint_and_replay_sends_the_failure_again(
    relay_factory: Callable[..., Any], tmp_path: Path
) -> None:
    with Receiver() as rx:
        rx.script = [Reply(410)]
        relay = relay_factory(webhooks=hooks(rx, events=["message.queued"]))
        admin = {"x-api-key": relay.create_key("ops", scope="admin")}
        key = relay.create_key()
        send(relay, key)
        rx.wait(lambda g: len(g) == 1)
        url = f"{relay.http_url}/v1/webhooks"
        deadline = time.monotonic() + 5
        while httpx.get(url, headers=admin).json()["data"][0]["enabled"]:
            assert time.monotonic() < deadline, "the 410 did not disable the endpoint"
            time.sleep(0.05)
        (e,) = httpx.get(url, headers=admin).json()["data"]
        assert "410" in e["disabled_reason"]
        failed = httpx.get(f"{url}/{e['id']}/deliveries?status=failed", headers=admin).json()
        assert [d["last_status"] for d in failed["data"]] == [410]
        assert (
            httpx.get(f"{url}/{e['id']}/deliveries?status=nope", headers=admin).status_code == 422
        )
        send(relay, key)  # while disabled: nothing is queued for it, nothing is sent
        time.sleep(1.5)
        assert len(rx.received) == 1
        # The operator fixes the endpoint, enables it and replays what failed.
        r = httpx.patch(f"{url}/{e['id']}", json={"enabled": True}, headers=admin)
        assert r.status_code == 200 and r.json()["data"]["enabled"]
        config = tmp_path / "relay.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{relay.settings.database_url.split("///")[1]}"\n'
            '[[providers]]\nname = "c"\nkind = "maildir"\n'
            f'path = "{tmp_path / "md"}"\n'
        )
        out = CliRunner().invoke(
            main, ["webhooks", "replay", "--since", "1h", "--config", str(config)]
        )
        assert out.exit_code == 0, out.output
        assert "1 webhook deliveries will be sent again" in out.output
        got = rx.wait(lambda g: len(g) == 2, timeout=10)
        assert got[1].headers["webhook-id"] == got[0].headers["webhook-id"]
        # An endpoint id that names none is an error, not an empty listing (exit 0).
        for args in (["deliveries", "wh_nope"], ["replay", "--since", "1h", "--endpoint", "x"]):
            out = CliRunner().invoke(main, ["webhooks", *args, "--config", str(config)])
            assert out.exit_code == 1 and "no webhook endpoint" in out.output, out.output
        listed = CliRunner().invoke(
            main, ["webhooks", "deliveries", e["id"], "--config", str(config)]
        )
        assert listed.exit_code == 0 and "message.queued" in listed.output, listed.output


def test_endpoints_through_the_api_with_rotation(relay_factory: Callable[..., Any]) -> None:
    with Receiver() as rx:
        relay = relay_factory(webhooks={"allow_private": True})
        admin = {"x-api-key": relay.create_key("ops", scope="admin")}
        url = f"{relay.http_url}/v1/webhooks"
        sender = {"x-api-key": relay.create_key()}
        assert httpx.post(url, json={"url": rx.url}, headers=sender).status_code == 403
        bad = httpx.post(url, json={"url": rx.url, "events": ["message.nope"]}, headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "events"
        bad = httpx.post(url, json={"url": "ftp://x/"}, headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_url"
        r = httpx.post(url, json={"url": rx.url, "events": ["message.queued"]}, headers=admin)
        assert r.status_code == 201, r.text
        made = r.json()["data"]
        old = made["secret"]
        assert old.startswith("whsec_") and 24 <= len(base64.b64decode(old[6:])) <= 64
        shown = httpx.get(f"{url}/{made['id']}", headers=admin).json()["data"]
        assert "secret" not in shown and shown["events"] == ["message.queued"]
        send(relay, sender["x-api-key"])
        first = rx.wait(lambda g: len(g) == 1)[0]
        verified(old, first)
        rotated = httpx.post(f"{url}/{made['id']}/rotate", headers=admin).json()["data"]
        new = rotated["secret"]
        assert new != old
        send(relay, sender["x-api-key"])
        second = rx.wait(lambda g: len(g) == 2)[1]
        assert len(second.headers["webhook-signature"].split()) == 2
        verified(new, second)
        verified(old, second)  # receivers not yet updated still verify during the overlap
        assert httpx.delete(f"{url}/{made['id']}", headers=admin).status_code == 204
        assert httpx.get(f"{url}/{made['id']}", headers=admin).status_code == 404


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "[::ffff:192.168.1.1]", "localhost"],
)
def test_private_addresses_are_refused(relay_factory: Callable[..., Any], target: str) -> None:
    relay = relay_factory()
    admin = {"x-api-key": relay.create_key("ops", scope="admin")}
    r = httpx.post(
        f"{relay.http_url}/v1/webhooks", json={"url": f"http://{target}:8080/h"}, headers=admin
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_url", r.text
    assert "allow_private" in r.json()["error"]["message"]
    data = {
        "providers": [{"name": "c", "kind": "maildir", "path": "/tmp/c"}],
        "webhooks": {"endpoints": [{"url": f"https://{target}/h", "secret": SECRET}]},
    }
    with pytest.raises(ConfigError, match=r"\[webhooks\].*allow_private"):
        load_settings(data=data, environ={})


def test_configured_endpoints_need_a_valid_secret_and_known_events() -> None:
    base = {"providers": [{"name": "c", "kind": "maildir", "path": "/tmp/c"}]}
    for endpoint, problem in [
        ({"url": "https://hooks.example.com/", "secret": "nope"}, "whsec_"),
        ({"url": "https://hooks.example.com/"}, "secret"),
        ({"url": "https://hooks.example.com/", "secret": SECRET, "events": ["x"]}, "unknown event"),
        ({"url": "hooks.example.com", "secret": SECRET}, "http"),
    ]:
        with pytest.raises(ConfigError, match=problem) as err:
            load_settings(data={**base, "webhooks": {"endpoints": [endpoint]}}, environ={})
        assert "[[webhooks.endpoints]] #1" in str(err.value) or "[webhooks]" in str(err.value)


def test_kill_9_between_the_event_and_its_post_loses_no_webhook(tmp_path: Path) -> None:
    from test_crash_and_shutdown import Serve, write_config

    from fakes.upstream import Upstream

    with Receiver() as rx, Upstream() as upstream:
        rx.script = [Reply(delay=30)]  # the first POST hangs: the relay dies during it
        config = write_config(tmp_path, upstream.port)
        config.write_text(
            config.read_text()
            + f'[webhooks]\nallow_private = true\n[[webhooks.endpoints]]\nurl = "{rx.url}"\n'
            f'secret = "{SECRET}"\nevents = ["message.queued"]\n'
        )
        log = tmp_path / "serve.log"
        serve = Serve(config, log)
        try:
            with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as smtp:
                smtp.sendmail("app@example.com", ["ann@example.net"], b"Subject: x\r\n\r\nbody\r\n")
            rx.wait(lambda g: len(g) == 1)
            os.kill(serve.proc.pid, signal.SIGKILL)
            serve.proc.wait(10)
        finally:
            serve.close()
        again = Serve(config, log)
        try:
            got = rx.wait(lambda g: len(g) == 2, timeout=20)
        finally:
            again.close()
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        verified(SECRET, got[1])


def test_opens_clicks_and_unsubscribes_become_webhooks(
    relay_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """One event model: what tracking and List-Unsubscribe record goes out as webhooks,
    with the user agent, address and URL."""
    import re

    from test_tracking import client, local, parts, send, start

    from mailgate.delivery.dkim import generate_key

    pem, txt = generate_key("ed25519")
    (tmp_path / "dkim.pem").write_bytes(pem)
    keyfile = (tmp_path / "dkim.pem", txt)

    from fakes.upstream import Upstream

    wanted = ["message.opened", "message.clicked", "message.unsubscribed"]
    with Receiver() as rx, Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up, webhooks=hooks(rx, events=wanted))
        with client(relay) as api:
            qid = send(api, to="reader@dest.test", tracking={"opens": True, "clicks": True})
        (got,) = up.wait_for(1)
        html = parts(got)["text/html"]
        pixel = re.findall(r'<img[^>]+src="([^"]+/t/o/[^"]+)"', html)[0]
        click = next(u for u in re.findall(r'href="([^"]+)"', html) if "/t/c/" in u)
        unsubscribe = re.findall(r"<([^>]+/u/[^>]+)>", got.message["List-Unsubscribe"])[0]
        with httpx.Client(headers={"user-agent": "MailReader/1.0"}) as web:
            assert web.get(local(pixel, relay)).status_code == 200
            assert web.get(local(click, relay)).status_code == 302
            r = web.post(local(unsubscribe, relay), content=b"List-Unsubscribe=One-Click")
            assert r.status_code == 200
        rx.wait(lambda g: sorted(set(types(g))) == sorted(wanted), timeout=20)
        opened = verified(SECRET, rx.of_type("message.opened")[0])["data"]
        assert opened["message_id"] == qid and opened["recipient"] == "reader@dest.test"
        assert opened["user_agent"] == "MailReader/1.0" and opened["ip"] == "127.0.0.1"
        clicked = verified(SECRET, rx.of_type("message.clicked")[0])["data"]
        assert clicked["url"] == "https://shop.test/item?id=7&ref=mail"
        gone = verified(SECRET, rx.of_type("message.unsubscribed")[0])["data"]
        assert gone["recipient"] == "reader@dest.test"


def test_a_reload_moves_webhooks_to_the_new_endpoint(tmp_path: Path) -> None:
    """[[webhooks.endpoints]] changed and reloaded (SIGHUP): events after it go to the new
    URL, none to the old one, and check-config's refusal of a private URL keeps the old."""
    from test_crash_and_shutdown import write_config

    from fakes.serve import ServeProcess
    from fakes.upstream import Upstream

    def endpoint(url: str, allow_private: bool = True) -> str:
        return (
            f"[webhooks]\nallow_private = {'true' if allow_private else 'false'}\n"
            f'[[webhooks.endpoints]]\nurl = "{url}"\nsecret = "{SECRET}"\n'
            'events = ["message.queued"]\n'
        )

    with Receiver() as old, Receiver() as new, Upstream() as upstream:
        config = write_config(tmp_path, upstream.port)
        base = config.read_text()
        config.write_text(base + endpoint(old.url))
        serve = ServeProcess(config, tmp_path / "serve.log")
        try:

            def mail(n: int) -> None:
                with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as smtp:
                    smtp.sendmail(
                        "app@example.com", ["a@example.net"], f"Subject: {n}\r\n\r\nx\r\n"
                    )

            mail(1)
            old.wait(lambda g: len(g) == 1)
            config.write_text(base + endpoint(new.url))
            os.kill(serve.proc.pid, signal.SIGHUP)
            serve.wait_for(r"(reloaded) ")
            mail(2)
            got = new.wait(lambda g: len(g) == 1)
            verified(SECRET, got[0])
            # A private URL without allow_private is refused; the new endpoint stays.
            config.write_text(base + endpoint(new.url, allow_private=False))
            os.kill(serve.proc.pid, signal.SIGHUP)
            line = serve.wait_for(r"(reload refused, the running settings stay: .*)")
            assert "allow_private" in line
            mail(3)
            new.wait(lambda g: len(g) == 2)
            time.sleep(0.5)
            assert len(old.received) == 1
        finally:
            serve.close()


def test_a_reload_of_allow_private_applies_to_the_api_at_once(tmp_path: Path) -> None:
    """[webhooks] allow_private changed and reloaded: POST /v1/webhooks checks a URL
    against the setting as it is now (it kept the one it was started with)."""
    from fakes.serve import ServeProcess, capture_config

    config = tmp_path / "relay.toml"
    base = capture_config(tmp_path / "data")
    config.write_text(base + "[webhooks]\nallow_private = false\n")
    create = ["keys", "create", "--name", "ops", "--scope", "admin", "--config", str(config)]
    made = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", *create],
        capture_output=True,
        text=True,
        check=True,
    )
    admin = {"x-api-key": made.stdout.strip().splitlines()[-1]}
    serve = ServeProcess(config, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{serve.http_port}/v1/webhooks"

        def post(n: int) -> int:
            hook = {"url": f"http://127.0.0.1:9/hook{n}"}
            return httpx.post(url, json=hook, headers=admin, timeout=10).status_code

        assert post(1) == 422
        for n, (allowed, status) in enumerate([("true", 201), ("false", 422)], start=1):
            config.write_text(base + f"[webhooks]\nallow_private = {allowed}\n")
            os.kill(serve.proc.pid, signal.SIGHUP)
            serve.wait_for(r"(reloaded) ", count=n)
            assert post(n + 1) == status
    finally:
        serve.close()

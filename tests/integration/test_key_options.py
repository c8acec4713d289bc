"""Story: a key or a template says who sends, templates keep the client's ids, and a key's
quota caps how many recipients it gets accepted per day or month, over HTTP and SMTP."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mailgate.credentials import create_key
from mailgate.quota import parse_quota
from mailgate.store import NewMessage, QuotaRace, QuotaTake, Store
from mailgate.store.schema import messages

MISSING = "from: no sender: give from, set a template's from, create the key with --default-from"


def client_for(relay: Any, name: str, **options: str) -> httpx.Client:
    """An HTTP client with a new key created with ``options`` (default_from, quota)."""
    key = relay.call(create_key(relay.store, name, **options))
    return httpx.Client(
        base_url=relay.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def send(client: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"to": "rcpt@dest.test", "subject": "hello", "text": "body", **fields}
    return client.post("/v1/messages/send", json=body)


def sender_of(relay: Any, resp: httpx.Response) -> str:
    assert resp.status_code == 202, resp.text
    return str(relay.message(resp.json()["data"]["id"])["sender"])


def test_default_sender_order_template_then_key_then_compat(
    relay_factory: Callable, tmp_path: Path
) -> None:
    relay = relay_factory(compat={"default_from": "fallback@example.org"})
    with (
        client_for(relay, "plain") as plain,
        client_for(relay, "keyed", default_from="key@example.com") as keyed,
    ):
        made = plain.post(
            "/v1/templates",
            json={"name": "t", "from": "Shop <shop@example.com>", "subject": "Hi", "text": "x"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["data"]["from"] == "Shop <shop@example.com>"
        template_id = made.json()["data"]["id"]

        # The request's own from always wins.
        assert sender_of(relay, send(keyed, **{"from": "own@example.com"})) == "own@example.com"
        # Then the template's, the key's, [compat]'s.
        resp = send(keyed, template_id=template_id)
        assert sender_of(relay, resp) == "shop@example.com"
        assert resp.json()["data"]["from"] == "shop@example.com"
        assert sender_of(relay, send(keyed)) == "key@example.com"
        assert sender_of(relay, send(plain)) == "fallback@example.org"
        # The message's From carries the template's display name.
        queue_id = resp.json()["data"]["id"]
        relay.wait_status(queue_id, lambda s: set(s.values()) == {"sent"})
        files = (tmp_path / "maildir" / "new").iterdir()
        heads = [f.read_bytes().split(b"\r\n\r\n", 1)[0] for f in files]
        assert any(b"\r\nFrom: Shop <shop@example.com>\r\n" in h for h in heads), heads


def test_no_sender_anywhere_is_400_naming_the_settings(relay: Any) -> None:
    with client_for(relay, "plain") as plain:
        resp = send(plain)
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["code"] == "missing_from" and error["field"] == "from"
        assert error["message"].startswith(MISSING) and "[compat] default_from" in error["message"]
        # In a batch, each message without a sender is refused on its own.
        batch = plain.post(
            "/v1/messages/batch",
            json={
                "messages": [
                    {"to": "a@dest.test", "subject": "s", "text": "t"},
                    {"from": "app@example.com", "to": "b@dest.test", "subject": "s", "text": "t"},
                ]
            },
        )
        assert batch.status_code == 202, batch.text
        items = batch.json()["data"]["messages"]
        assert [i["status"] for i in items] == ["rejected", "queued"]
        assert items[0]["error"]["code"] == "missing_from"


def test_a_default_sender_still_passes_the_domain_policy(relay_factory: Callable) -> None:
    relay = relay_factory(compat={"default_from": "news@elsewhere.test"})
    with (
        client_for(relay, "stranger", default_from="app@elsewhere.test") as stranger,
        client_for(relay, "plain") as plain,
    ):
        for client in (stranger, plain):
            resp = send(client)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["code"] == "domain_not_verified"
        made = plain.post(
            "/v1/templates", json={"name": "t", "from": "x@elsewhere.test", "text": "x"}
        )
        resp = send(plain, template_id=made.json()["data"]["id"])
        assert resp.json()["error"]["code"] == "domain_not_verified"


def test_key_default_from_is_validated() -> None:
    from mailgate.credentials import validate_default_from

    assert validate_default_from(" app@example.com ") == "app@example.com"
    for bad in ("not an address", "App <app@example.com>", "@example.com", "app@"):
        with pytest.raises(ValueError, match="default-from"):
            validate_default_from(bad)


def test_templates_take_the_clients_id(relay: Any) -> None:
    with client_for(relay, "plain") as api:
        for template_id in ("template-123", "0b9e6a8c-4f1e-4c7e-9d55-1f0a3c2b7e11"):
            made = api.post(
                "/v1/templates", json={"id": template_id, "name": "n", "subject": "s", "text": "t"}
            )
            assert made.status_code == 201, made.text
            assert made.json()["data"]["id"] == template_id
            assert made.json()["data"]["from"] is None
            assert api.get(f"/v1/templates/{template_id}").json()["data"]["name"] == "n"
        again = api.post("/v1/templates", json={"id": "template-123", "name": "other"})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "template_exists"
        assert api.get("/v1/templates/template-123").json()["data"]["name"] == "n"
        for bad in ("", "a" * 65, "has space", "slash/y", "ü"):
            resp = api.post("/v1/templates", json={"id": bad, "name": "n"})
            assert resp.status_code == 422, (bad, resp.text)
            assert resp.json()["error"]["field"] == "id"
        bad_from = api.post("/v1/templates", json={"name": "n", "from": "nobody"})
        assert bad_from.status_code == 422
        assert bad_from.json()["error"]["field"] == "from"
        # A template's sender can be changed and removed.
        changed = api.put("/v1/templates/template-123", json={"from": "a@example.com"})
        assert changed.json()["data"]["from"] == "a@example.com"
        removed = api.put("/v1/templates/template-123", json={"from": ""})
        assert removed.json()["data"]["from"] is None


def test_quota_cuts_a_batch_and_refuses_the_next_send(relay: Any) -> None:
    with client_for(relay, "capped", quota="3/d", default_from="app@example.com") as api:
        batch = api.post(
            "/v1/messages/batch",
            json={
                "messages": [
                    {"to": f"r{i}@dest.test", "subject": "s", "text": "t"} for i in range(5)
                ]
            },
        )
        assert batch.status_code == 202, batch.text
        data = batch.json()["data"]
        assert (data["queued"], data["errors"]) == (3, 2)
        statuses = [(m["status"], (m.get("error") or {}).get("code")) for m in data["messages"]]
        assert statuses == [("queued", None)] * 3 + [("rejected", "quota_exceeded")] * 2

        over = send(api)
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert 0 < int(over.headers["Retry-After"]) <= 86400

        key = relay.call(relay.store.keys.by_name("capped"))
        period = parse_quota("3/d").period(time.time())
        assert relay.call(relay.store.keys.quota_usage(key.id, period)) == 3
        assert relay.call(relay.store.keys.quota_usage(key.id, "1999-01-01")) == 0


def test_quota_counts_recipients_and_smtp_submissions(relay: Any) -> None:
    key = relay.call(create_key(relay.store, "smtp-capped", quota="3/month"))
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
        client.login("apikey", key)
        data = b"From: app@example.com\r\nSubject: s\r\n\r\nbody\r\n"
        refused = client.sendmail("app@example.com", ["a@dest.test", "b@dest.test"], data)
        assert refused == {}
        # One recipient is left: a message to two does not fit, one to one does.
        with pytest.raises(smtplib.SMTPDataError) as exc:
            client.sendmail("app@example.com", ["c@dest.test", "d@dest.test"], data)
        assert exc.value.smtp_code == 452
        assert exc.value.smtp_error.decode().startswith("4.7.1 Sending quota")
        assert client.sendmail("app@example.com", ["c@dest.test"], data) == {}
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("app@example.com", ["e@dest.test"], data)
    record = relay.call(relay.store.keys.by_name("smtp-capped"))
    assert record.quota == "3/month"
    period = parse_quota(record.quota).period(time.time())
    assert relay.call(relay.store.keys.quota_usage(record.id, period)) == 3


# ------------------------------------------------------------ the store, both engines


def test_two_nodes_cannot_take_more_than_the_quota(db_url: str) -> None:
    """Two stores on one database (two nodes), 40 concurrent takes of 1 of a limit of 10:
    exactly 10 commit, with their messages; the rest write nothing."""

    def msg(i: int) -> NewMessage:
        return NewMessage(
            id=f"q-{i:03d}",
            created_at=time.time(),
            sender="app@example.com",
            recipients=["r@dest.test"],
            raw=b"Subject: x\r\n\r\nbody\r\n",
        )

    async def main() -> tuple[int, int, int]:
        a = await Store.open(db_url)
        b = await Store.open(db_url, upgrade=False)
        try:
            take = QuotaTake("k1", "2026-12", 10, 1)

            async def one(i: int) -> bool:
                try:
                    await (a if i % 2 else b).enqueue([msg(i)], quota=take)
                except QuotaRace as race:
                    assert race.used == 10
                    return False
                return True

            done = await asyncio.gather(*(one(i) for i in range(40)))
            async with a.engine.connect() as conn:
                stored = (await conn.execute(select(func.count()).select_from(messages))).scalar()
            return sum(done), int(stored or 0), await b.keys.quota_usage("k1", "2026-12")
        finally:
            await a.close()
            await b.close()

    assert asyncio.run(main()) == (10, 10, 10)


# ------------------------------------------------------------------- the command

CONFIG = """
[server]
hostname = "relay.test"
data_dir = "{data}"
[[domains]]
name = "example.com"
[[providers]]
name = "capture"
kind = "maildir"
path = "{data}/maildir"
"""


def test_keys_create_with_default_from_and_quota(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailgate.cli import main

    cfg = tmp_path / "relay.toml"
    cfg.write_text(CONFIG.format(data=tmp_path / "data"))
    create = ["keys", "create", "--config", str(cfg)]
    options = ["--default-from", "shop@example.com", "--quota", "10000/month"]
    proc = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", *create, "--name", "shop", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = proc.stdout.strip().splitlines()[-1]
    assert key.startswith("mg_") and " " not in key
    runner = CliRunner()
    daily = runner.invoke(main, [*create, "--name", "daily", "--quota", "500/day"])
    assert daily.exit_code == 0, daily.output
    # A display name is refused as such (its ">" was taken for part of the domain).
    named = runner.invoke(
        main, [*create, "--name", "bot", "--default-from", "Bot <bot@example.com>"]
    )
    assert named.exit_code == 2 and "give a bare address" in named.output, named.output
    listed = runner.invoke(main, ["keys", "list", "--config", str(cfg)])
    assert listed.exit_code == 0, listed.output
    shop = next(line for line in listed.output.splitlines() if line.startswith("shop "))
    assert "0 of 10000/month" in shop and "shop@example.com" in shop
    assert "0 of 500/d" in listed.output
    for options, expected in (
        (["--quota", "lots"], "invalid quota"),
        (["--quota", "10/m"], "invalid quota"),
        (["--default-from", "nobody"], "default-from"),
        (["--default-from", "a@elsewhere.test"], "elsewhere.test is not a sending domain"),
    ):
        bad = runner.invoke(main, [*create, "--name", "bad", *options])
        assert bad.exit_code == 2 and expected in bad.output, (options, bad.output)

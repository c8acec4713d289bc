"""Story: an operator runs the queue over HTTP (/v1/admin/...) with an admin key, as
`mailgate queue` does on the command line: lists by filter, retry, hold, release,
delete, bounce with a DSN; provider health from the delivery process; queue statistics.

Every request goes to a live relay through httpx.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from tests.conftest import RelayRunner

from fakes.serve import capture_config
from mailgate.cli import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens here once the socket is closed


def down_provider(**extra: Any) -> dict[str, Any]:
    return {
        "name": "down",
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": closed_port(),
        "tls": "none",
        **extra,
    }


def submit(relay: RelayRunner, sender: str, rcpts: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.sendmail(sender, rcpts, b"Subject: s\r\nFrom: " + sender.encode() + b"\r\n\r\nx\r\n")
    return str(relay.call(relay.store.list_messages(limit=1))[0]["id"])


@pytest.fixture
def stuck(relay_factory) -> RelayRunner:  # type: ignore[no-untyped-def]
    """A relay whose only provider is down, with retries an hour apart."""
    return relay_factory(
        providers=[down_provider()], retry={"min_backoff": "1h", "max_backoff": "2h", "jitter": 0}
    )


def client(relay: RelayRunner, scope: str = "admin") -> httpx.Client:
    key = relay.create_key(f"{scope}-key", scope=scope)
    return httpx.Client(
        base_url=relay.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


@pytest.fixture
def admin(stuck: RelayRunner) -> Iterator[httpx.Client]:
    with client(stuck) as c:
        yield c


def test_admin_routes_need_an_admin_key(stuck: RelayRunner) -> None:
    paths = ["/v1/admin/queue", "/v1/admin/providers", "/v1/admin/stats"]
    with httpx.Client(base_url=stuck.http_url, timeout=30) as anonymous:
        for path in paths:
            got = anonymous.get(path)
            assert got.status_code == 401
            assert got.json()["error"]["code"] == "unauthorized"
    for scope in ("send", "read"):
        with client(stuck, scope) as c:
            for path in paths:
                got = c.get(path)
                assert got.status_code == 403, got.text
                assert got.json()["error"]["code"] == "forbidden"
            got = c.post("/v1/admin/queue/retry", json={"all": True})
            assert got.status_code == 403


def test_queue_list_filters(stuck: RelayRunner, admin: httpx.Client) -> None:
    a = submit(stuck, "app@example.com", ["x@dest.test", "y@other.test"])
    b = submit(stuck, "news@example.org", ["z@dest.test"])
    for qid in (a, b):
        stuck.wait_status(qid, lambda s: set(s.values()) == {"deferred"})

    def listed(**params: str) -> list[tuple[str, str]]:
        got = admin.get("/v1/admin/queue", params=params)
        assert got.status_code == 200, got.text
        return sorted((e["message_id"], e["recipient"]) for e in got.json()["data"])

    everything = listed()
    assert everything == sorted([(a, "x@dest.test"), (a, "y@other.test"), (b, "z@dest.test")])
    entry = admin.get("/v1/admin/queue", params={"ids": b}).json()["data"][0]
    assert entry["status"] == "deferred" and entry["attempts"] == 1
    assert entry["provider"] == "down" and entry["sender"] == "news@example.org"
    assert entry["last_response"] and entry["in_flight"] is False
    assert entry["created_at"].endswith("Z") and entry["next_attempt_at"].endswith("Z")
    assert listed(to="dest.test") == [(a, "x@dest.test"), (b, "z@dest.test")]
    assert listed(to="y@other.test") == [(a, "y@other.test")]
    assert listed(**{"from": "example.org"}) == [(b, "z@dest.test")]
    assert listed(ids=f"{a},{b}", to="dest.test", **{"from": "app@example.com"}) == [
        (a, "x@dest.test")
    ]
    assert listed(provider="down") == everything
    assert listed(provider="elsewhere") == []
    assert listed(older_than="1h") == []
    clock, stuck.app.api.clock = stuck.app.api.clock, lambda: time.time() + 2  # type: ignore[union-attr]
    try:
        assert listed(older_than="1s") == everything  # two seconds later
    finally:
        stuck.app.api.clock = clock  # type: ignore[union-attr]
    assert listed(status="deferred") == everything
    assert listed(status="queued,held") == []
    assert listed(status="all") == everything
    page = admin.get("/v1/admin/queue", params={"limit": "1", "offset": "1"}).json()
    assert page["meta"] == {"limit": 1, "offset": 1, "count": 1}

    for params, field in (
        ({"status": "nonsense"}, "status"),
        ({"older_than": "soon"}, "older_than"),
        ({"limit": "0"}, "limit"),
    ):
        got = admin.get("/v1/admin/queue", params=params)
        assert got.status_code == 422, got.text
        assert got.json()["error"]["field"] == field


def test_queue_actions_retry_hold_release_delete(stuck: RelayRunner, admin: httpx.Client) -> None:
    qid = submit(stuck, "app@example.com", ["a@dest.test", "b@other.test"])
    stuck.wait_status(qid, lambda s: set(s.values()) == {"deferred"})

    def act(action: str, **body: Any) -> dict[str, Any]:
        got = admin.post(f"/v1/admin/queue/{action}", json=body)
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()["data"]
        assert data["action"] == action
        return data

    def attempts() -> dict[str, int]:
        return {d["recipient"]: d["attempts"] for d in stuck.message(qid)["deliveries"]}

    got = admin.post("/v1/admin/queue/retry", json={})
    assert got.status_code == 422 and got.json()["error"]["code"] == "empty_selection"
    got = admin.post("/v1/admin/queue/retry", json={"all": True, "color": "red"})
    assert got.status_code == 422 and got.json()["error"]["field"] == "color"
    for loose in ("yes", "true", 1):  # only JSON true acts on every delivery
        got = admin.post("/v1/admin/queue/retry", json={"all": loose})
        assert got.status_code == 422 and got.json()["error"]["field"] == "all", got.text
    got = admin.post("/v1/admin/queue/explode", json={"all": True})
    assert got.status_code == 404 and got.json()["error"]["code"] == "not_found"

    assert act("retry", to="dest.test")["deliveries"] == 1
    deadline = time.monotonic() + 15
    while attempts()["a@dest.test"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attempts() == {"a@dest.test": 2, "b@other.test": 1}

    assert act("hold", ids=[qid]) == {"action": "hold", "deliveries": 2, "messages": 1, "dsns": []}
    stuck.wait_status(qid, lambda s: set(s.values()) == {"held"})
    assert act("retry", all=True)["deliveries"] == 0  # held mail is not retried
    assert act("release", to="b@other.test", provider="down")["deliveries"] == 1
    deadline = time.monotonic() + 15
    while attempts()["b@other.test"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attempts()["b@other.test"] == 2
    assert act("delete", **{"from": "example.com"})["deliveries"] == 2
    stuck.wait_status(qid, lambda s: set(s.values()) == {"cancelled"})
    types = [e["type"] for e in stuck.events(qid)]
    assert {"retry", "held", "released", "cancelled"} <= set(types)


def test_requeue_brings_back_what_ended(
    stuck: RelayRunner, admin: httpx.Client, tmp_path: Path
) -> None:
    """Failed or bounced mail queued again by filter (postsuper -r), over the admin API
    and the CLI, as the dashboard's retry does for one message; a recipient suppressed
    since is left out."""
    from mailgate.models import Suppression

    qid = submit(stuck, "app@example.com", ["a@dest.test", "b@other.test"])
    stuck.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    assert admin.post("/v1/admin/queue/bounce", json={"ids": [qid]}).status_code == 200
    stuck.wait_status(qid, lambda s: set(s.values()) == {"bounced"})
    stuck.call(stuck.store.suppressions.add([Suppression("b@other.test", "manual", "", "", 1.0)]))
    got = admin.post("/v1/admin/queue/requeue", json={"ids": [qid]})
    assert got.status_code == 200, got.text
    assert got.json()["data"] == {
        "action": "requeue",
        "deliveries": 1,
        "messages": 1,
        "dsns": [],
        "suppressed": 1,
    }
    stuck.wait_status(qid, lambda s: s == {"a@dest.test": "deferred", "b@other.test": "bounced"})
    assert admin.post("/v1/admin/queue/bounce", json={"ids": [qid]}).status_code == 200
    stuck.wait_status(qid, lambda s: set(s.values()) == {"bounced"})
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{stuck.settings.database_url.split("///")[1]}"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path / "m"}"\n'
    )
    out = CliRunner().invoke(
        main, ["queue", "requeue", "--to", "dest.test", "--config", str(config)]
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "requeue: 1 deliveries of 1 messages"
    assert stuck.message(qid)["deliveries"][0]["status"] in ("queued", "deferred")


def test_bounce_ends_deliveries_with_a_dsn_to_the_sender(
    relay_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Mail to the test domains goes to a provider that is down; DSNs to example.com land
    # in the Maildir.
    maildir = tmp_path / "maildir"
    relay = relay_factory(
        providers=[down_provider(), {"name": "capture", "kind": "maildir", "path": str(maildir)}],
        routes=[
            {"recipient_domains": ["example.com"], "providers": ["capture"]},
            {"recipient_domains": ["dest.test", "other.test", "third.test"], "providers": ["down"]},
        ],
        retry={"min_backoff": "1h", "max_backoff": "2h", "jitter": 0},
    )
    qid = submit(relay, "app@example.com", ["a@dest.test", "b@other.test"])
    other = submit(relay, "app@example.com", ["c@third.test"])
    relay.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    relay.wait_status(other, lambda s: set(s.values()) == {"deferred"})

    with client(relay) as admin:
        got = admin.post(
            "/v1/admin/queue/bounce", json={"ids": [qid], "reason": "destination retired"}
        )
        assert got.status_code == 200, got.text
        data = got.json()["data"]
        assert (data["deliveries"], data["messages"], len(data["dsns"])) == (2, 1, 1)
        again = admin.post("/v1/admin/queue/bounce", json={"ids": [qid]}).json()["data"]
        assert again["deliveries"] == 0 and again["dsns"] == []  # bounced is final
    assert relay.statuses(qid) == {"a@dest.test": "bounced", "b@other.test": "bounced"}
    assert relay.statuses(other) == {"c@third.test": "deferred"}  # not selected
    events = [e for e in relay.events(qid) if e["type"] == "bounced"]
    assert len(events) == 2
    assert all(e["response"] == "550 5.0.0 destination retired" for e in events)
    assert relay.message(qid)["status"] == "bounced"

    dsn_id = data["dsns"][0]
    dsn = relay.message(dsn_id)
    assert dsn["sender"] == "" and dsn["source"] == "dsn"
    assert [d["recipient"] for d in dsn["deliveries"]] == ["app@example.com"]
    relay.wait_status(dsn_id, lambda s: set(s.values()) == {"sent"})
    (path,) = (maildir / "new").iterdir()
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    text = path.read_bytes().decode()
    assert "Final-Recipient: rfc822; a@dest.test" in text
    assert "Final-Recipient: rfc822; b@other.test" in text
    assert "Status: 5.0.0" in text and "destination retired" in text


def test_queue_bounce_command(tmp_path: Path, stuck: RelayRunner) -> None:
    qid = submit(stuck, "app@example.com", ["a@dest.test"])
    stuck.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    cfg = tmp_path / "cli.toml"
    cfg.write_text(capture_config(tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(main, ["queue", "bounce", "--config", str(cfg)])
    assert result.exit_code == 2
    result = runner.invoke(
        main,
        ["queue", "bounce", "--to", "dest.test", "--older-than", "0s", "--config", str(cfg)],
    )
    assert result.exit_code == 0, result.output
    assert "bounce: 1 deliveries of 1 messages, 1 DSN(s) queued" in result.output
    assert stuck.statuses(qid) == {"a@dest.test": "bounced"}
    bounced = [e for e in stuck.events(qid) if e["type"] == "bounced"]
    assert bounced and "operator" in bounced[0]["response"]


def test_providers_report_breaker_errors_and_successes(
    relay_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    relay = relay_factory(
        providers=[
            down_provider(priority=1, breaker_failures=1, breaker_cooldown="1h", rate="50/s"),
            {
                "name": "capture",
                "kind": "maildir",
                "path": str(tmp_path / "maildir"),
                "priority": 2,
            },
        ]
    )
    qid = submit(relay, "app@example.com", ["a@dest.test"])
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    with client(relay) as admin:
        got = admin.get("/v1/admin/providers")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["node"] == relay.settings.server.node_id and body["delivery"] == "running"
    by_name = {p["name"]: p for p in body["data"]}
    down, capture = by_name["down"], by_name["capture"]
    assert down["node"] == body["node"]
    assert down["breaker"] == "open"  # one failure opens it (breaker_failures = 1)
    assert down["last_error"] and down["last_error"].startswith("connect")
    assert down["last_error_at"].endswith("Z") and down["last_success_at"] is None
    assert down["connections_in_use"] == 0 and down["max_connections"] == 10
    assert down["rate_limit"] == "50/s" and down["rate"] > 0
    assert capture["breaker"] == "closed" and capture["last_error"] is None
    assert capture["last_success_at"].endswith("Z") and capture["rate"] > 0


def test_providers_without_delivery(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(delivery={"enabled": False})
    with client(relay) as admin:
        body = admin.get("/v1/admin/providers").json()
    assert body["delivery"] == "disabled"
    assert [p["name"] for p in body["data"]] == ["capture"]
    assert body["data"][0]["breaker"] is None


def test_stats_rates_depth_and_oldest_pending(stuck: RelayRunner, admin: httpx.Client) -> None:
    empty = admin.get("/v1/admin/stats").json()["data"]
    assert empty["oldest_pending"] is None
    assert empty["rates"]["accepted"]["1m"] == {"count": 0, "per_second": 0.0}
    before = time.time()
    qid = submit(stuck, "app@example.com", ["a@dest.test", "b@other.test"])
    stuck.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    admin.post("/v1/admin/queue/hold", json={"to": "b@other.test"})
    got = admin.get("/v1/admin/stats")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert set(data["rates"]) == {"accepted", "sent", "delivered", "deferred", "bounced", "failed"}
    for window in ("1m", "5m", "15m"):
        assert data["rates"]["accepted"][window]["count"] == 2
        assert data["rates"]["deferred"][window]["count"] == 2
    assert data["rates"]["accepted"]["1m"]["per_second"] == round(2 / 60, 3)
    assert data["rates"]["accepted"]["15m"]["per_second"] == round(2 / 900, 3)
    assert data["depth"]["deferred"] == 1 and data["depth"]["held"] == 1
    assert data["depth"]["sent"] == 0
    oldest = data["oldest_pending"]
    assert oldest is not None and 0 <= oldest["age_seconds"] <= time.time() - before + 1


def test_openapi_lists_the_admin_routes(stuck: RelayRunner) -> None:
    with httpx.Client(base_url=stuck.http_url, timeout=30) as c:
        doc = c.get("/v1/openapi.json").json()
    assert {"get"} <= set(doc["paths"]["/v1/admin/queue"])
    action = doc["paths"]["/v1/admin/queue/{action}"]["post"]
    assert action["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "QueueSelection"
    )
    assert "/v1/admin/providers" in doc["paths"] and "/v1/admin/stats" in doc["paths"]
    names = {p["name"] for p in doc["paths"]["/v1/admin/queue"]["get"]["parameters"]}
    assert {"ids", "to", "from", "status", "provider", "older_than"} <= names


def test_admin_queue_and_stats_on_postgresql(relay_factory, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """The same statements on PostgreSQL: filters, bounce with its DSN, rates."""
    relay = relay_factory(
        database={"url": pg_url},
        providers=[down_provider()],
        retry={"min_backoff": "1h", "max_backoff": "2h", "jitter": 0},
    )
    qid = submit(relay, "app@example.com", ["a@dest.test", "b@other.test"])
    relay.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    with client(relay) as admin:
        listed = admin.get(
            "/v1/admin/queue", params={"to": "DEST.test", "provider": "down", "older_than": "0s"}
        ).json()["data"]
        assert [e["recipient"] for e in listed] == ["a@dest.test"]
        data = admin.post("/v1/admin/queue/bounce", json={"to": "other.test"}).json()["data"]
        assert (data["deliveries"], len(data["dsns"])) == (1, 1)
        stats = admin.get("/v1/admin/stats").json()["data"]
    assert relay.statuses(qid) == {"a@dest.test": "deferred", "b@other.test": "bounced"}
    assert stats["rates"]["bounced"]["1m"]["count"] == 1
    assert stats["rates"]["accepted"]["5m"]["count"] == 3  # the message's two and the DSN
    assert stats["oldest_pending"] is not None

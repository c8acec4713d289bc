"""Story: an API client picks the provider, reads the upstream's message id, and sends with
one attempt that it can retry itself (the delivery side of the compatibility dialects)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.upstream import Upstream


def provider(name: str, port: int, priority: int = 10) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "priority": priority,
        "breaker_failures": 100,
    }


@pytest.fixture
def ups() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream() as first, Upstream() as second:
        yield first, second


def send(relay: Any, key: str, **fields: Any) -> httpx.Response:
    body = {
        "from": "app@example.com",
        "to": "a@dest.test",
        "subject": "hello",
        "text": "hi",
        **fields,
    }
    return httpx.post(
        f"{relay.http_url}/v1/messages/send",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def sent_id(relay: Any, key: str, **fields: Any) -> str:
    r = send(relay, key, **fields)
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["id"])


def detail(relay: Any, key: str, qid: str) -> dict[str, Any]:
    r = httpx.get(
        f"{relay.http_url}/v1/messages/{qid}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def sources(relay: Any) -> list[str]:
    return sorted(m["source"] for m in relay.call(relay.store.list_messages(limit=100)))


def test_a_pinned_message_goes_only_to_its_provider(relay_factory, ups) -> None:  # type: ignore[no-untyped-def]
    first, second = ups
    relay = relay_factory(
        providers=[provider("first", first.port, 1), provider("second", second.port, 2)]
    )
    key = relay.create_key()
    free = sent_id(relay, key)
    pinned = sent_id(relay, key, provider="second")
    relay.wait_status(free, lambda s: s == {"a@dest.test": "sent"})
    relay.wait_status(pinned, lambda s: s == {"a@dest.test": "sent"})
    assert [r.queue_id for r in first.received] == [free]
    assert [r.queue_id for r in second.received] == [pinned]
    assert detail(relay, key, pinned)["recipients"][0]["provider"] == "second"


def test_a_pinned_provider_that_is_down_defers_without_failover(relay_factory, ups) -> None:  # type: ignore[no-untyped-def]
    first, second = ups
    second.stop_listening()
    relay = relay_factory(
        providers=[provider("first", first.port, 1), provider("second", second.port, 2)]
    )
    key = relay.create_key()
    qid = sent_id(relay, key, provider="second")
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "deferred"})
    second.start_listening()
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
    assert first.received == []
    types = [e["type"] for e in relay.events(qid)]
    assert "failover" not in types and types[-1] == "sent"
    assert [r.queue_id for r in second.received] == [qid]


def test_a_pinned_provider_no_longer_configured_defers(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After a configuration change: deferred with a clear reply, never bounced."""
    import asyncio

    from mailgate.config import load_settings
    from mailgate.delivery.attempt import Deliverer
    from mailgate.models import ClaimedDelivery, QueuedMessage
    from mailgate.routing.router import Router

    settings = load_settings(
        data={
            "server": {"hostname": "relay.test", "data_dir": str(tmp_path / "d")},
            "domains": [{"name": "example.com"}],
            "providers": [{"name": "capture", "kind": "maildir", "path": str(tmp_path / "md")}],
        },
        environ={},
    )
    msg = QueuedMessage(
        id="m1",
        sender="app@example.com",
        raw=b"Subject: x\r\n\r\nbody\r\n",
        created_at=time.time(),
        deliveries=[ClaimedDelivery("m1", 0, "a@dest.test", 0, "queued")],
        provider="gone",
    )

    async def attempt() -> Any:
        deliverer = Deliverer(settings, Router(settings))
        try:
            return await deliverer.attempt(msg)
        finally:
            await deliverer.close()

    record = asyncio.run(attempt())
    (update,) = record.updates
    assert update.status.value == "deferred"
    assert update.response == "451 4.3.5 provider gone is not configured"
    assert not (tmp_path / "md" / "new").exists() or not list((tmp_path / "md" / "new").iterdir())


def test_unknown_provider_is_a_404(relay_factory, ups) -> None:  # type: ignore[no-untyped-def]
    first, _second = ups
    relay = relay_factory(providers=[provider("first", first.port)])
    key = relay.create_key()
    r = send(relay, key, provider="nope")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "code": "provider_not_found",
            "message": "provider: no provider named 'nope'",
            "field": "provider",
        }
    }
    batch = httpx.post(
        f"{relay.http_url}/v1/messages/batch",
        json={
            "messages": [
                {"from": "app@example.com", "to": "a@dest.test", "subject": "s", "text": "t"},
                {
                    "from": "app@example.com",
                    "to": "b@dest.test",
                    "subject": "s",
                    "text": "t",
                    "provider": "nope",
                },
            ]
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert batch.status_code == 202, batch.text
    items = batch.json()["data"]["messages"]
    assert items[0]["status"] == "queued"
    assert items[1]["status"] == "rejected"
    assert items[1]["error"]["code"] == "provider_not_found"


def test_provider_message_id_from_the_upstream_reply(relay_factory, ups) -> None:  # type: ignore[no-untyped-def]
    first, _second = ups
    first.faults.data_reply = "250 2.0.0 Ok: queued as ABC123"
    relay = relay_factory(providers=[provider("first", first.port)])
    key = relay.create_key()
    qid = sent_id(relay, key)
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
    (rcpt,) = detail(relay, key, qid)["recipients"]
    assert rcpt["provider_message_id"] == "ABC123"
    assert rcpt["last_response"] == "250 2.0.0 Ok: queued as ABC123"


def test_provider_message_id_of_the_maildir_is_the_file_name(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    key = relay.create_key()
    qid = sent_id(relay, key, to=["a@dest.test", "b@dest.test"])
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    ids = [r["provider_message_id"] for r in detail(relay, key, qid)["recipients"]]
    files = sorted(p.name for p in (tmp_path / "maildir" / "new").iterdir())
    assert sorted(ids) == files and len(set(ids)) == 2
    for rid in ids:
        text = (tmp_path / "maildir" / "new" / rid).read_bytes()
        assert b"Subject: hello" in text


def test_single_attempt_fails_at_once_without_a_dsn_and_can_be_requeued(relay_factory, ups) -> None:  # type: ignore[no-untyped-def]
    first, second = ups
    first.stop_listening()
    second.stop_listening()
    relay = relay_factory(
        providers=[provider("first", first.port, 1), provider("second", second.port, 2)]
    )
    key = relay.create_key()
    qid = sent_id(relay, key, single_attempt=True)
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "failed"})
    d = relay.message(qid)["deliveries"][0]
    assert d["attempts"] == 1 and d["next_attempt_at"] is None
    assert [e["type"] for e in relay.events(qid)] == ["queued", "failover", "failed"]
    assert sources(relay) == ["http"]  # no DSN

    first.start_listening()
    done = relay.call(relay.store.requeue([(qid, 0), (qid, 5)], time.time()))
    assert done.requeued == [(qid, 0, "a@dest.test")] and done.suppressed == []
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
    assert relay.message(qid)["deliveries"][0]["attempts"] == 2
    assert [e["type"] for e in relay.events(qid)][-2:] == ["retry", "sent"]
    assert [r.queue_id for r in first.received] == [qid]
    # Nothing to requeue once sent.
    again = relay.call(relay.store.requeue([(qid, 0)], time.time()))
    assert again.requeued == [] and again.suppressed == []


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_bounce_of_a_single_attempt_has_no_dsn_and_requeue_refuses_suppressed(
    relay_factory, ups, engine: str, request: pytest.FixtureRequest
) -> None:  # type: ignore[no-untyped-def]
    first, _second = ups
    first.faults.rcpt_replies = {
        "gone@dest.test": "550 5.1.1 no such user",
        "gone2@dest.test": "550 5.1.1 no such user",
    }
    extra: dict[str, Any] = {}
    if engine == "postgresql":
        extra["database"] = {"url": request.getfixturevalue("pg_url")}
    relay = relay_factory(providers=[provider("first", first.port)], **extra)
    key = relay.create_key()
    once = sent_id(relay, key, to=["gone@dest.test", "a@dest.test"], single_attempt=True)
    relay.wait_status(once, lambda s: s == {"gone@dest.test": "bounced", "a@dest.test": "sent"})
    assert sources(relay) == ["http"]
    # The same bounce without single_attempt does get its DSN (the check above can fail).
    plain = sent_id(relay, key, to="gone2@dest.test")
    relay.wait_status(plain, lambda s: s == {"gone2@dest.test": "bounced"})
    assert sources(relay) == ["dsn", "http", "http"]

    # 5.1.1 suppressed the address: a retry is refused for it, and nothing changes.
    done = relay.call(relay.store.requeue([(once, 0), (once, 1), (plain, 0)], time.time()))
    assert done.requeued == []
    assert sorted(done.suppressed) == sorted(
        [(once, 0, "gone@dest.test"), (plain, 0, "gone2@dest.test")]
    )
    assert relay.statuses(once) == {"gone@dest.test": "bounced", "a@dest.test": "sent"}
    assert "retry" not in [e["type"] for e in relay.events(once)]

    # Once the suppression is lifted, the bounced delivery comes back (and bounces again).
    relay.call(relay.store.suppressions.remove("gone@dest.test"))
    done = relay.call(relay.store.requeue([(once, 0)], time.time()))
    assert done.requeued == [(once, 0, "gone@dest.test")] and done.suppressed == []
    relay.wait_status(
        once, lambda s: s["gone@dest.test"] == "bounced" and "retry" in _types(relay, once)
    )
    assert _types(relay, once).count("bounced") == 2


def _types(relay: Any, qid: str) -> list[str]:
    return [e["type"] for e in relay.events(qid)]

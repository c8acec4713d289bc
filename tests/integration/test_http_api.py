"""Story: an application sends through the JSON HTTP API (MailingAPI's /v1/messages).

Every request runs against a live relay with httpx; what reaches the Maildir capture is
parsed back with the ``email`` package.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import mailgate.ingress.http
from conftest import RelayRunner, build_settings

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def refusing_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One relay for the module's tests that only get refusals (nothing is queued): a
    relay's start costs about 2 s, and the validation table alone has 35 rows."""
    relay = RelayRunner(build_settings(tmp_path_factory.mktemp("refusals"))).start()
    try:
        key = relay.create_key("app")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=relay.http_url, headers=headers, timeout=30) as client:
            yield client
    finally:
        relay.stop()


@pytest.fixture
def api(relay):  # type: ignore[no-untyped-def]
    key = relay.create_key("app")
    with httpx.Client(
        base_url=relay.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        client.relay = relay  # type: ignore[attr-defined]
        client.key = key  # type: ignore[attr-defined]
        yield client


def delivered(
    tmp_path: Path, count: int, timeout: float = 10.0
) -> list[email.message.EmailMessage]:
    folder = tmp_path / "maildir" / "new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.iterdir()) if folder.exists() else []
        if len(files) >= count:
            return [
                email.message_from_bytes(f.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
                for f in files
            ]
        time.sleep(0.05)
    raise AssertionError(f"expected {count} delivered messages")


def error_of(resp: httpx.Response) -> dict:  # type: ignore[type-arg]
    body = resp.json()
    assert set(body) == {"error"}, body
    return body["error"]


# ------------------------------------------------------------- seed examples


def test_seed_send_example(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "Your Company <hello@example.com>",
            "to": "John Doe <john@example.net>",
            "subject": "Your order has shipped",
            "html": (
                "<h1>Order Shipped</h1><p>Hi {{name}}, your order #{{order_id}} is on the way!</p>"
            ),
            "text": "Order Shipped\n\nHi {{name}}, your order #{{order_id}} is on the way!",
            "template_data": {"name": "John", "order_id": "12345"},
            "tags": ["transactional", "shipping"],
            "metadata": {"user_id": "usr_123", "order_id": "ord_456"},
        },
    )
    assert resp.status_code == 202, resp.text
    data = resp.json()["data"]
    assert set(data) == {
        "id",
        "message_id",
        "from",
        "to",
        "subject",
        "status",
        "tags",
        "metadata",
        "created_at",
    }
    assert UUID.match(data["id"])
    assert data["message_id"] == f"<{data['id']}@relay.test>"
    assert data["from"] == "hello@example.com"
    assert data["to"] == "john@example.net"
    assert data["subject"] == "Your order has shipped"
    assert data["status"] == "queued"
    assert data["tags"] == ["transactional", "shipping"]
    assert data["metadata"] == {"user_id": "usr_123", "order_id": "ord_456"}
    assert ISO_Z.match(data["created_at"])

    (msg,) = delivered(tmp_path, 1)
    assert msg["From"] == "Your Company <hello@example.com>"
    assert msg["To"] == "John Doe <john@example.net>"
    assert msg["Message-ID"] == data["message_id"]
    assert msg.get_content_type() == "multipart/alternative"
    assert "Hi John, your order #12345 is on the way!" in msg.get_body(("plain",)).get_content()
    assert "<p>Hi John, your order #12345" in msg.get_body(("html",)).get_content()

    got = api.get(f"/v1/messages/{data['id']}")
    assert got.status_code == 200
    detail = got.json()["data"]
    for key in ("id", "message_id", "from", "to", "subject", "tags", "metadata", "created_at"):
        assert detail[key] == data[key], key
    deadline = time.monotonic() + 10
    while detail["status"] != "sent" and time.monotonic() < deadline:
        time.sleep(0.05)
        detail = api.get(f"/v1/messages/{data['id']}").json()["data"]
    assert detail["status"] == "sent"
    assert ISO_Z.match(detail["sent_at"])
    assert detail["delivered_at"] is None  # accepted by the capture provider, not a recipient MX
    (rcpt,) = detail["recipients"]
    assert rcpt["email"] == "john@example.net" and rcpt["status"] == "sent"
    assert rcpt["last_response"].startswith("250 2.0.0") and rcpt["attempts"] == 1

    events = api.get(f"/v1/messages/{data['id']}/events").json()["data"]
    assert [e["type"] for e in events] == ["queued", "sent"]
    assert all(e["id"].startswith("evt_") and ISO_Z.match(e["timestamp"]) for e in events)
    assert events[1]["metadata"]["provider"] == "capture"


def test_an_address_named_twice_gets_one_copy(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same person in to and cc (or twice in to, in another case) gets the message
    once; the answer does not call the repeats suppressed."""
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": ["Ann <ann@example.net>", "ANN@example.net"],
            "cc": ["ann@EXAMPLE.net", "bob@example.net"],
            "subject": "Once",
            "text": "only once",
        },
    )
    assert resp.status_code == 202, resp.text
    assert "suppressed" not in resp.json()["data"]
    assert len(delivered(tmp_path, 2)) == 2
    time.sleep(0.3)
    assert len(list((tmp_path / "maildir" / "new").iterdir())) == 2
    detail = api.get(f"/v1/messages/{resp.json()['data']['id']}").json()["data"]
    assert [r["email"] for r in detail["recipients"]] == ["ann@example.net", "bob@example.net"]


def test_seed_attachments_and_inline_image(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pdf = b"%PDF-1.4 invoice"
    png = b"\x89PNG\r\n\x1a\nlogo"
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": ["a@example.net", "b@example.net"],
            "subject": "Invoice",
            "html": '<p>See attached.</p><img src="cid:logo">',
            "attachments": [
                {
                    "filename": "invoice.pdf",
                    "content": base64.b64encode(pdf).decode(),
                    "content_type": "application/pdf",
                },
                {  # wrapped at 76 columns, as base64 tools write it, and the id in <>
                    "filename": "logo.png",
                    "content": base64.encodebytes(png * 20).decode(),
                    "content_type": "image/png",
                    "content_id": "<logo>",
                },
            ],
        },
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["data"]["to"] == ["a@example.net", "b@example.net"]
    msg = delivered(tmp_path, 2)[0]
    assert msg.get_content_type() == "multipart/mixed"
    parts = {p.get_content_type(): p for p in msg.walk()}
    assert "multipart/related" in parts
    assert parts["image/png"]["Content-ID"] == "<logo>"
    assert parts["image/png"].get_content() == png * 20
    assert parts["application/pdf"].get_filename() == "invoice.pdf"
    assert parts["application/pdf"].get_content() == pdf


def test_seed_tracking_example_text_only_and_html_only(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "alerts@example.com",
            "to": "user@example.net",
            "subject": "New login detected",
            "html": "<p>A new login was detected on your account.</p>",
            "tracking": {"opens": False, "clicks": False},
        },
    )
    assert resp.status_code == 202
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "alerts@example.com",
            "to": "u2@example.net",
            "subject": "t",
            "text": "plain",
        },
    )
    assert resp.status_code == 202
    msgs = delivered(tmp_path, 2)
    types = sorted(m.get_content_type() for m in msgs)
    assert types == ["text/html", "text/plain"]


def test_seed_batch_with_recipient_variables(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/batch",
        json={
            "from": "hello@example.com",
            "subject": "Welcome, {{name}}!",
            "html": "<p>Hi {{name}}, your code is {{code}}.</p>",
            "recipient_variables": {
                "alice@example.net": {"name": "Alice", "code": "ABC123"},
                "bob@example.net": {"name": "Bob", "code": "XYZ789"},
            },
        },
    )
    assert resp.status_code == 202, resp.text
    data = resp.json()["data"]
    assert (data["total"], data["queued"], data["errors"]) == (2, 2, 0)
    assert [(m["index"], m["status"], m["to"]) for m in data["messages"]] == [
        (0, "queued", "alice@example.net"),
        (1, "queued", "bob@example.net"),
    ]
    assert all(UUID.match(m["id"]) for m in data["messages"])
    by_to = {m["To"]: m for m in delivered(tmp_path, 2)}
    assert by_to["alice@example.net"]["Subject"] == "Welcome, Alice!"
    assert "your code is XYZ789" in by_to["bob@example.net"].get_content()


def test_seed_batch_with_messages_array(api) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/batch",
        json={
            "messages": [
                {
                    "from": "hello@example.com",
                    "to": "alice@example.net",
                    "subject": "Your invoice",
                    "html": "<p>Invoice #001 attached.</p>",
                },
                {
                    "from": "hello@example.com",
                    "to": "bob@example.net",
                    "subject": "Your receipt",
                    "html": "<p>Receipt #002 attached.</p>",
                },
            ]
        },
    )
    assert resp.status_code == 202
    assert resp.json()["data"]["queued"] == 2


def test_a_batch_s_own_fields_are_its_messages_defaults(api) -> None:  # type: ignore[no-untyped-def]
    """A schedule, tags or metadata given beside ``messages`` apply to each (a message's
    own win); they were accepted and ignored, so a scheduled batch went out at once."""
    import datetime

    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    resp = api.post(
        "/v1/messages/batch",
        json={
            "from": "hello@example.com",
            "subject": "Shared",
            "scheduled_at": later,
            "tags": ["top"],
            "metadata": {"m": "top"},
            "messages": [
                {"to": "alice@example.net", "text": "a"},
                {"to": "bob@example.net", "text": "b", "tags": ["own"], "subject": "Own"},
            ],
        },
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["data"]["queued"] == 2, resp.text
    ids = [m["id"] for m in resp.json()["data"]["messages"]]
    first, second = (api.get(f"/v1/messages/{i}").json()["data"] for i in ids)
    assert first["status"] == second["status"] == "scheduled"
    assert first["tags"] == ["top"] and second["tags"] == ["own"]
    assert first["metadata"] == second["metadata"] == {"m": "top"}
    assert (first["subject"], second["subject"]) == ("Shared", "Own")


def test_seed_list_messages_with_filters(api) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        r = api.post(
            "/v1/messages/send",
            json={
                "from": "hello@example.com",
                "to": f"u{i}@example.net",
                "subject": f"s{i}",
                "text": "x",
            },
        )
        assert r.status_code == 202
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    resp = api.get("/v1/messages", params={"since": since, "limit": 2})
    assert resp.status_code == 200
    body = resp.json()
    assert body["meta"] == {"count": 2, "total": 3, "limit": 2, "offset": 0, "has_more": True}
    assert [m["subject"] for m in body["data"]] == ["s2", "s1"]
    assert set(body["data"][0]) == {
        "id",
        "message_id",
        "from",
        "to",
        "subject",
        "status",
        "tags",
        "metadata",
        "created_at",
    }
    page2 = api.get("/v1/messages", params={"limit": 2, "offset": 2}).json()
    assert page2["meta"]["has_more"] is False and len(page2["data"]) == 1
    only = api.get("/v1/messages", params={"to": "U1@example.net"}).json()
    assert [m["subject"] for m in only["data"]] == ["s1"]
    future = api.get("/v1/messages", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future["data"] == [] and future["meta"]["total"] == 0
    # The seed's "max: 100" clamps a larger page size; a non-positive one is refused.
    clamped = api.get("/v1/messages", params={"limit": 101})
    assert clamped.status_code == 200 and clamped.json()["meta"]["limit"] == 100
    assert len(clamped.json()["data"]) == 3
    for bad in ("0", "-1", "ten"):
        assert error_of(api.get("/v1/messages", params={"limit": bad}))["field"] == "limit"
    # "pending" (created, not yet queued) is a seed status; mail is queued at its commit.
    pending = api.get("/v1/messages", params={"status": "pending"})
    assert pending.status_code == 200 and pending.json()["data"] == []
    assert pending.json()["meta"]["total"] == 0
    assert error_of(api.get("/v1/messages", params={"status": "lost"}))["field"] == "status"
    assert (
        error_of(api.get("/v1/messages", params={"since": "yesterday"}))["code"]
        == "invalid_parameter"
    )


def test_seed_schedule_list_and_cancel(api) -> None:  # type: ignore[no-untyped-def]
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": "user@example.net",
            "subject": "Holiday greeting",
            "html": "<p>Happy holidays!</p>",
            "scheduled_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    assert resp.status_code == 202
    data = resp.json()["data"]
    assert data["status"] == "scheduled"
    assert data["scheduled_at"] == when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    listed = api.get("/v1/messages/scheduled").json()["data"]
    assert listed == [
        {
            "id": data["id"],
            "to": "user@example.net",
            "subject": "Holiday greeting",
            "scheduled_at": data["scheduled_at"],
            "status": "scheduled",
        }
    ]
    resp = api.delete(f"/v1/messages/{data['id']}/schedule")
    assert resp.status_code == 200
    assert resp.json()["data"] == {
        "id": data["id"],
        "status": "cancelled",
        "created_at": data["created_at"],
    }
    assert api.get(f"/v1/messages/{data['id']}").json()["data"]["status"] == "cancelled"
    assert api.get("/v1/messages/scheduled").json()["data"] == []
    again = api.delete(f"/v1/messages/{data['id']}/schedule")
    assert again.status_code == 409 and error_of(again)["code"] == "not_scheduled"
    types = [e["type"] for e in api.get(f"/v1/messages/{data['id']}/events").json()["data"]]
    assert types == ["scheduled", "cancelled"]


def test_scheduled_message_goes_out_when_due(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": "user@example.net",
            "subject": "soon",
            "text": "x",
            "scheduled_at": when.isoformat(),
        },
    )
    assert resp.json()["data"]["status"] == "scheduled"
    assert not (tmp_path / "maildir" / "new").exists() or not list(
        (tmp_path / "maildir" / "new").iterdir()
    )
    delivered(tmp_path, 1, timeout=10)
    # On time: the scheduler sleeps until the earliest held message, not a fixed recheck.
    assert datetime.now(UTC) - when < timedelta(seconds=1.5)
    qid = resp.json()["data"]["id"]
    cancel = api.delete(f"/v1/messages/{qid}/schedule")
    assert cancel.status_code == 409


# --------------------------------------------------------------- auth, limits


def test_authentication_and_scopes(relay, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Keys are cached for AUTH_CACHE_SECONDS; a short cache lets the revocation below show
    # within a fraction of a second instead of a fixed 2 s sleep.
    monkeypatch.setattr(mailgate.ingress.http, "AUTH_CACHE_SECONDS", 0.2)
    send_key = relay.create_key("sender")
    read_key = relay.create_key("reader", scope="read")
    body = {"from": "hello@example.com", "to": "u@example.net", "subject": "s", "text": "t"}
    with httpx.Client(base_url=relay.http_url) as c:
        r = c.post("/v1/messages/send", json=body)
        assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"
        assert "Bearer" in r.headers["www-authenticate"]
        r = c.post("/v1/messages/send", json=body, headers={"Authorization": "Bearer mg_nope"})
        assert r.status_code == 401
        r = c.post("/v1/messages/send", json=body, headers={"x-api-key": send_key})
        assert r.status_code == 202
        qid = r.json()["data"]["id"]
        r = c.post("/v1/messages/send", json=body, headers={"Authorization": f"Bearer {read_key}"})
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
        # A read key sees every message; another send key sees only its own.
        other = relay.create_key("other")
        assert c.get(f"/v1/messages/{qid}", headers={"x-api-key": read_key}).status_code == 200
        r = c.get(f"/v1/messages/{qid}", headers={"x-api-key": other})
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        assert c.get("/v1/messages", headers={"x-api-key": other}).json()["meta"]["total"] == 0
        assert c.get("/v1/messages/nope", headers={"x-api-key": read_key}).status_code == 404
        relay.call(relay.store.keys.revoke("sender", time.time()))
        deadline = time.monotonic() + 5
        while c.get("/v1/messages", headers={"x-api-key": send_key}).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.05)
        r = c.post("/v1/messages/send", json=body, headers={"x-api-key": send_key})
        assert r.status_code == 401


def test_rate_limit_429_with_retry_after(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("slow", rate="2/s")
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        codes = [c.get("/v1/messages").status_code for _ in range(5)]
        assert codes[:2] == [200, 200] and 429 in codes
        r = c.get("/v1/messages")
        if r.status_code == 429:
            assert error_of(r)["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1


def test_body_limits_and_malformed_json(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(http={"listen": ["127.0.0.1:0"], "max_body_size": "10KB"})
    key = relay.create_key("app")
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        r = c.post(
            "/v1/messages/send", content=b'{"from": ', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
        deep = b'{"a":' * 1200 + b"1" + b"}" * 1200  # deeper than json.loads recurses
        r = c.post("/v1/messages/send", content=deep)
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_json", r.text
        big = {"from": "a@example.com", "to": "b@example.net", "subject": "s", "text": "x" * 20000}
        r = c.post("/v1/messages/send", json=big)
        assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
        r = c.post("/v1/messages/send", json=[1, 2])
        assert r.status_code == 422 and error_of(r)["code"] == "invalid_request"
        assert c.get("/v1/nothing").status_code == 404
        assert error_of(c.put("/v1/messages/send"))["code"] == "method_not_allowed"
        # JSON has no NaN or infinity: an answer echoing one would not be JSON.
        send = '{"from":"a@example.com","to":"b@example.net","subject":"s","text":"t",'
        for bom, value, where in [
            (b"", '"metadata":{"a":NaN}}', "metadata.a"),
            (b"", '"metadata":{"a":[1,-Infinity]}}', "metadata.a[1]"),
            (b"", '"tags":["x"],"metadata":{"n":1e400}}', "metadata.n"),
            (b"\xef\xbb\xbf", '"metadata":{"b":NaN}}', "metadata.b"),  # read by the json module
        ]:
            r = c.post("/v1/messages/send", content=bom + (send + value).encode())
            assert r.status_code == 400, (value, r.text)
            assert error_of(r)["code"] == "invalid_json" and error_of(r)["field"] == where
        r = c.post(
            "/v1/messages/send", content=(send + '"metadata":{"a":' + "1" * 5000 + "}}").encode()
        )
        assert r.status_code == 400 and "more than 4300 digits" in error_of(r)["message"]
        r = c.post("/v1/messages/send", content=(send + '"metadata":{"a":1e300}}').encode())
        assert r.status_code == 202 and r.json()["data"]["metadata"] == {"a": 1e300}


def _slow_post(url: str, key: str, head: str, parts: list[bytes]) -> bytes:
    """A POST whose body arrives in ``parts`` 0.3 s apart, read back to the end."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n{head}\r\n".encode()
        )
        for part in parts:
            time.sleep(0.3)  # the answer is long made: the server must still be reading
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_gets_its_413_while_still_sending(  # type: ignore[no-untyped-def]
    relay_factory, chunked: bool
) -> None:
    """Refused by its Content-Length, or once it grew past the limit, a body still on its
    way is read and dropped: the client, still sending, reads the 413 rather than a
    connection reset (the server closing with bytes unread)."""
    relay = relay_factory(http={"listen": ["127.0.0.1:0"], "max_body_size": "10KB"})
    key = relay.create_key("app")
    parts = [b'{"text": "' + b"x" * 8000, b"x" * 8000, b"x" * 8000 + b'"}']
    if chunked:
        head = "Transfer-Encoding: chunked\r\n"
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    else:
        head = f"Content-Length: {sum(len(p) for p in parts)}\r\n"
    answer = _slow_post(relay.http_url, key, head, parts)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("half_close", [False, True])
@pytest.mark.parametrize("path", ["/v1/messages/send", "/email/send", "/api/v1/emails/send"])
def test_a_client_gone_before_its_body_ended_is_no_error(  # type: ignore[no-untyped-def]
    relay, caplog, half_close: bool, path: str
) -> None:
    """A body shorter than its Content-Length, then the client closes (or stops sending):
    nothing is queued, and the log says so in a line, not with a traceback at ERROR."""
    caplog.set_level("INFO")
    key = relay.create_key("app")
    host, port = relay.http_url.removeprefix("http://").split(":")
    body = b'{"from":"a@example.com","to":"b@example.net","subject":"s","text":"t"}'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)  # the server closes
    deadline = time.monotonic() + 5
    while "before its body ended" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "before its body ended" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    listed = httpx.get(f"{relay.http_url}/v1/messages", headers={"x-api-key": key})
    assert listed.status_code == 200 and listed.json()["data"] == []


# -------------------------------------------------------------- validation


BASE = {"from": "hello@example.com", "to": "user@example.net", "subject": "s", "text": "t"}


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"from": "not an address"}, "invalid_from_address", "from"),
        ({"from": "Name <>"}, "invalid_from_address", "from"),
        ({"to": "a" * 257 + " <u@example.net>"}, "invalid_to_address", "to"),
        ({"reply_to": "a" * 257 + " <u@example.net>"}, "invalid_reply_to", "reply_to"),
        ({"from": "someone@gmail.com"}, "domain_not_verified", "from"),
        ({"to": "nope"}, "invalid_to_address", "to"),
        ({"to": ["ok@example.net", "bad@@example.net"]}, "invalid_to_address", "to[1]"),
        ({"to": []}, "invalid_to_address", "to"),
        ({"cc": ["x@"]}, "invalid_to_address", "cc[0]"),
        ({"bcc": "a b@example.net"}, "invalid_to_address", "bcc"),
        ({"subject": ""}, "missing_subject", "subject"),
        ({"subject": None}, "missing_subject", "subject"),
        ({"text": None}, "missing_body", "html"),
        (
            {"template_id": "00000000-0000-7000-8000-000000000000"},
            "invalid_template",
            "template_id",
        ),
        ({"text": "Hi {{ name }}", "template_data": {}}, "invalid_template", "template_data"),
        (
            {"text": "Hi {{ name ", "template_data": {"name": "x"}},
            "invalid_template",
            "template_data",
        ),
        # A template's own runtime errors and resource abuse are the client's: 422, no 500,
        # no minutes of CPU.
        ({"text": "{{ 1 / 0 }}", "template_data": {}}, "invalid_template", "template_data"),
        ({"text": "{{ 9 ** (9 ** 9) }}", "template_data": {}}, "invalid_template", "template_data"),
        (
            {"subject": "{{ 'x' * 100000000 }}", "template_data": {}},
            "invalid_template",
            "template_data",
        ),
        (
            {
                "html": "{% for i in range(99999) %}{% for j in range(99999) %}"
                "{% endfor %}{% endfor %}",
                "template_data": {},
            },
            "invalid_template",
            "template_data",
        ),
        (
            {"text": "{% for i in range(99999) %}{{ 'y' * 999 }}{% endfor %}", "template_data": {}},
            "invalid_template",
            "template_data",
        ),
        # Loops over a string (no range() to count), and values built past the output's
        # limit before it is measured: each took the event loop or memory of the relay.
        *(
            ({"text": text, "template_data": {}}, "invalid_template", "template_data")
            for text in (
                "{% set s='x'*4000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
                "{{ ''|center(100000000) }}",
                "{{ '%20000000d'|format(1) }}",
                "{{ '{:>200000000}'.format(1) }}",
                "{{ 'x'.ljust(100000000) }}",
                "{% set a='x'*9000000 %}{% set b=a~a~a~a %}{{ b|length }}",
                "{% set l = range(100000)|list %}{% set l = l+l %}{{ l|length }}",
            )
        ),
        (
            {"attachments": [{"filename": "a", "content": "AAAA"}] * 11},
            "too_many_attachments",
            "attachments",
        ),
        # Counted as given (the default [smtp] max_recipients is 100), a copy too.
        ({"to": ["u@example.net"] * 101}, "too_many_recipients", "to"),
        ({"cc": [f"c{i}@example.net" for i in range(100)]}, "too_many_recipients", "cc"),
        # Field paths as the API writes them, without pydantic's union member tags.
        ({"to": 5}, "invalid_to_address", "to"),
        ({"cc": [["x@example.net"]]}, "invalid_to_address", "cc"),
        (
            {"attachments": [{"filename": "a", "content": 5}]},
            "invalid_attachment",
            "attachments[0].content",
        ),
        (
            {"attachments": [{"filename": "a", "content": "!!notbase64"}]},
            "invalid_attachment",
            "attachments[0].content",
        ),
        (
            {"attachments": [{"filename": "a\r\nX: y", "content": "AAAA"}]},
            "invalid_attachment",
            "attachments[0].filename",
        ),
        (
            {"attachments": [{"filename": "a", "content": "AAAA", "content_type": "bad"}]},
            "invalid_attachment",
            "attachments[0].content_type",
        ),
        (  # it went out with no boundary, in base64
            {
                "attachments": [
                    {"filename": "a", "content": "AAAA", "content_type": "multipart/mixed"}
                ]
            },
            "invalid_attachment",
            "attachments[0].content_type",
        ),
        (
            {
                "attachments": [
                    {"filename": "a", "content": "AAAA", "content_id": "logo"},
                    {"filename": "b", "content": "AAAA", "content_id": "<LOGO>"},
                ]
            },
            "invalid_attachment",
            "attachments[1].content_id",
        ),
        (
            {"headers": {"X-Ok": "fine\r\nBcc: victim@example.net"}},
            "invalid_header",
            "headers.X-Ok",
        ),
        ({"headers": {"Bcc": "victim@example.net"}}, "invalid_header", "headers.Bcc"),
        ({"headers": {"DKIM-Signature": "v=1"}}, "invalid_header", "headers.DKIM-Signature"),
        ({"headers": {"Message-ID": "<x@y>"}}, "invalid_header", "headers.Message-ID"),
        (
            {"headers": {"content-disposition": "attachment; filename=x.exe"}},
            "invalid_header",
            "headers.content-disposition",
        ),
        ({"headers": {"Content-ID": "<a@b>"}}, "invalid_header", "headers.Content-ID"),
        ({"headers": {"X Bad": "v"}}, "invalid_header", "headers.X Bad"),
        ({"subject": "hello\r\nBcc: victim@example.net"}, "invalid_header", "subject"),
        (
            {"from": "Evil\r\nBcc: victim@example.net <hello@example.com>"},
            "invalid_from_address",
            "from",
        ),
        ({"to": "Bob\n <bob@example.net>"}, "invalid_to_address", "to"),
        ({"surprise": 1}, "unknown_field", "surprise"),
        ({"optimize_send_time": True}, "unsupported_option", "optimize_send_time"),
        ({"scheduled_at": "next tuesday"}, "invalid_request", "scheduled_at"),
        ({"tags": ["ok", ""]}, "invalid_tags", "tags[1]"),
    ],
)
def test_validation_errors_name_code_and_field(refusing_api, change, code, field) -> None:  # type: ignore[no-untyped-def]
    body = {**BASE, **change}
    body = {k: v for k, v in body.items() if v is not None}
    resp = refusing_api.post("/v1/messages/send", json=body)
    assert resp.status_code == 422, resp.text
    err = error_of(resp)
    assert (err["code"], err["field"]) == (code, field), err
    assert err["message"]
    assert refusing_api.get("/v1/messages").json()["meta"]["total"] == 0  # nothing queued


def test_an_error_does_not_echo_a_huge_value(refusing_api) -> None:  # type: ignore[no-untyped-def]
    for field in ("to", "from", "reply_to", "provider"):
        resp = refusing_api.post("/v1/messages/send", json={**BASE, field: "x" * 100_000})
        assert resp.status_code in (404, 422) and error_of(resp)["field"] == field
        assert len(resp.content) < 1000, (field, len(resp.content))


def test_attachment_too_large(api) -> None:  # type: ignore[no-untyped-def]
    content = base64.b64encode(b"\0" * (10 * 1024 * 1024 + 1)).decode()
    resp = api.post(
        "/v1/messages/send",
        json={**BASE, "attachments": [{"filename": "big.bin", "content": content}]},
    )
    assert resp.status_code == 422 and error_of(resp)["code"] == "attachment_too_large"


def test_key_restricted_to_a_domain_gets_domain_not_verified(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("shop", domains=("example.org",))
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        r = c.post("/v1/messages/send", json=BASE)
        assert r.status_code == 422 and error_of(r)["code"] == "domain_not_verified"
        assert (
            c.post("/v1/messages/send", json={**BASE, "from": "shop@example.org"}).status_code
            == 202
        )


def test_international_addresses_and_names(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/send",
        json={
            "from": "Zoë Ünicode <hello@example.com>",
            "to": ["Jürgen <jurgen@bücher.example>", "用户@例子.example"],
            "subject": "Grüße — 你好",
            "text": "Schöne Grüße",
        },
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["data"]["to"] == ["jurgen@xn--bcher-kva.example", "用户@例子.example"]
    msgs = delivered(tmp_path, 2)
    assert msgs[0]["Subject"] == "Grüße — 你好"
    assert "Zoë Ünicode" in msgs[0]["From"]


def test_custom_headers_and_reply_to_reach_the_message(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/send",
        json={
            **BASE,
            "headers": {"X-Campaign": "spring"},
            "reply_to": "Support <help@example.com>",
            "bcc": ["hidden@example.net"],
        },
    )
    assert resp.status_code == 202
    msgs = delivered(tmp_path, 2)
    assert msgs[0]["X-Campaign"] == "spring"
    assert msgs[0]["Reply-To"] == "Support <help@example.com>"
    assert all(
        "hidden@example.net"
        not in m.as_string().split("\n\n", 1)[0].replace("Delivered-To: hidden@example.net", "")
        for m in msgs
    )


def test_reply_to_names_and_addresses_are_written_as_from_is(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A non-ASCII name is an encoded word beside the address (it swallowed the address), a
    name with a comma stays quoted (it became two addresses), a non-ASCII address is UTF-8."""
    cases = [
        ("José <r1@example.net>", "José", "r1@example.net"),
        ('"Doe, John" <r2@example.net>', "Doe, John", "r2@example.net"),
        ("jörg@example.net", "", "jörg@example.net"),
    ]
    for n, (reply_to, _name, _address) in enumerate(cases):
        body = {**BASE, "to": f"u{n}@example.net", "reply_to": reply_to}
        assert api.post("/v1/messages/send", json=body).status_code == 202
    by_to = {str(m["To"]): m for m in delivered(tmp_path, len(cases))}
    for n, (_reply_to, name, address) in enumerate(cases):
        (got,) = by_to[f"u{n}@example.net"]["Reply-To"].addresses
        utf8 = got.addr_spec.encode("utf-8", "surrogateescape").decode()  # raw UTF-8 header
        assert (got.display_name, utf8) == (name, address)


# ----------------------------------------------------------------- batches


def test_batch_of_1000_with_bad_recipients(api) -> None:  # type: ignore[no-untyped-def]
    variables = {f"user{i}@example.net": {"n": str(i)} for i in range(997)}
    variables.update({"bad@@example.net": {"n": "x"}, "no-at-sign": {"n": "y"}, "x@": {"n": "z"}})
    resp = api.post(
        "/v1/messages/batch",
        json={
            "from": "hello@example.com",
            "subject": "Hi {{ n }}",
            "text": "n={{ n }}",
            "recipient_variables": variables,
        },
    )
    assert resp.status_code == 202, resp.text
    data = resp.json()["data"]
    assert (data["total"], data["queued"], data["errors"]) == (1000, 997, 3)
    rejected = [m for m in data["messages"] if m["status"] == "rejected"]
    assert [m["index"] for m in rejected] == [997, 998, 999]
    assert [m["to"] for m in rejected] == ["bad@@example.net", "no-at-sign", "x@"]
    assert all(m["error"]["code"] == "invalid_to_address" for m in rejected)
    assert api.get("/v1/messages").json()["meta"]["total"] == 997


def test_batch_messages_validated_each_alone(api) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/batch",
        json={
            "messages": [
                BASE,
                {**BASE, "from": "x@gmail.com"},
                {**BASE, "subject": ""},
                {"to": 5},
                {**BASE, "to": "fine@example.net"},
            ]
        },
    )
    data = resp.json()["data"]
    assert [m["status"] for m in data["messages"]] == [
        "queued",
        "rejected",
        "rejected",
        "rejected",
        "queued",
    ]
    assert data["messages"][1]["error"]["code"] == "domain_not_verified"
    assert data["messages"][2]["error"]["code"] == "missing_subject"
    assert data["messages"][3]["error"]["field"] == "messages[3].to"
    # A refused message names its recipient as given, when it was a string (or strings).
    assert data["messages"][2]["to"] == BASE["to"] and "to" not in data["messages"][3]
    too_many = api.post("/v1/messages/batch", json={"messages": [BASE] * 1001})
    assert too_many.status_code == 422 and error_of(too_many)["code"] == "too_many_messages"
    both = api.post("/v1/messages/batch", json={"messages": [BASE], "recipient_variables": {}})
    assert both.status_code == 422
    broken = api.post("/v1/messages/batch", json={"messages": [BASE], "campaign_id": "c\n1"})
    assert broken.status_code == 422 and error_of(broken)["field"] == "campaign_id"


# ------------------------------------------------------------- idempotency


def test_idempotency_key(api) -> None:  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/messages/send", json=BASE, headers=headers)
    second = api.post("/v1/messages/send", json=BASE, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert api.get("/v1/messages").json()["meta"]["total"] == 1
    other = api.post("/v1/messages/send", json={**BASE, "subject": "changed"}, headers=headers)
    assert other.status_code == 409 and error_of(other)["code"] == "idempotency_conflict"
    batch_h = {"Idempotency-Key": "batch-1"}
    b1 = api.post("/v1/messages/batch", json={"messages": [BASE, BASE]}, headers=batch_h)
    b2 = api.post("/v1/messages/batch", json={"messages": [BASE, BASE]}, headers=batch_h)
    assert b1.json() == b2.json()
    assert api.get("/v1/messages").json()["meta"]["total"] == 3


def test_concurrent_sends_with_one_idempotency_key_queue_one_message(api) -> None:  # type: ignore[no-untyped-def]
    """Requests racing on one key: one commits, the others read its answer back (the
    DuplicateEntry path of http_idempotency.idempotent), none queues a second copy."""
    headers = {"Idempotency-Key": "race-1", "Authorization": f"Bearer {api.key}"}
    url = f"{api.relay.http_url}/v1/messages/send"

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(client.post(url, json=BASE, headers=headers) for _ in range(8))
                )
            )

    answers = asyncio.run(race())
    assert [r.status_code for r in answers] == [202] * 8
    assert len({r.json()["data"]["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) >= 1
    assert api.get("/v1/messages").json()["meta"]["total"] == 1


# --------------------------------------------------------------- templates


def test_templates_crud_and_use(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = api.post(
        "/v1/templates",
        json={
            "name": "welcome",
            "subject": "Welcome {{ name }}",
            "html": "<b>{{ name }}</b>",
            "text": "Hi {{ name }}",
        },
    )
    assert r.status_code == 201, r.text
    tpl = r.json()["data"]
    assert tpl["name"] == "welcome" and tpl["active"] is True
    assert api.get(f"/v1/templates/{tpl['id']}").json()["data"] == tpl
    assert [t["id"] for t in api.get("/v1/templates").json()["data"]] == [tpl["id"]]
    send = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": "u@example.net",
            "template_id": tpl["id"],
            "template_data": {"name": "<Ann>"},
        },
    )
    assert send.status_code == 202, send.text
    assert send.json()["data"]["subject"] == "Welcome <Ann>"
    (msg,) = delivered(tmp_path, 1)
    assert "<b>&lt;Ann&gt;</b>" in msg.get_body(("html",)).get_content()  # autoescaped
    assert "Hi <Ann>" in msg.get_body(("plain",)).get_content()  # text is not
    missing = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": "u@example.net",
            "template_id": tpl["id"],
            "template_data": {},
        },
    )
    assert missing.status_code == 422
    assert (
        "name" in error_of(missing)["message"] and error_of(missing)["code"] == "invalid_template"
    )
    upd = api.put(
        f"/v1/templates/{tpl['id']}", json={"subject": "Hello {{ name }}", "active": False}
    )
    assert upd.status_code == 200 and upd.json()["data"]["active"] is False
    inactive = api.post(
        "/v1/messages/send",
        json={
            "from": "hello@example.com",
            "to": "u@example.net",
            "template_id": tpl["id"],
            "template_data": {"name": "x"},
        },
    )
    assert error_of(inactive)["code"] == "invalid_template"
    bad = api.post("/v1/templates", json={"name": "broken", "html": "{% if %}"})
    assert bad.status_code == 422 and error_of(bad)["code"] == "invalid_template"
    # A subject no header can hold is refused when stored, not at every send using it.
    for subject in ("a\r\nBcc: v@example.org", "a\nb", "a\x1bb"):
        bad = api.post("/v1/templates", json={"name": "n", "subject": subject, "text": "t"})
        assert bad.status_code == 422 and error_of(bad)["field"] == "subject", bad.text
        bad = api.put(f"/v1/templates/{tpl['id']}", json={"subject": subject})
        assert bad.status_code == 422 and error_of(bad)["field"] == "subject", bad.text
    for template_id in (".", "..", "..."):
        bad = api.post("/v1/templates", json={"id": template_id, "name": "n", "text": "t"})
        assert error_of(bad)["code"] == "invalid_template_id", bad.text
    assert api.delete(f"/v1/templates/{tpl['id']}").status_code == 200
    assert api.get(f"/v1/templates/{tpl['id']}").status_code == 404


def test_template_sandbox_blocks_attribute_escapes(api) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/v1/messages/send",
        json={
            **BASE,
            "text": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "template_data": {},
        },
    )
    assert resp.status_code == 422 and error_of(resp)["code"] == "invalid_template"


# ------------------------------------------------------------------- ops


def test_health_ready_and_openapi(relay) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=relay.http_url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        doc = c.get("/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {
        "/v1/messages/send",
        "/v1/messages/batch",
        "/v1/messages",
        "/v1/messages/{message_id}",
        "/v1/messages/{message_id}/events",
        "/v1/messages/scheduled",
        "/v1/messages/{message_id}/schedule",
        "/v1/templates",
        "/v1/templates/{template_id}",
    }
    send_schema = doc["components"]["schemas"]["SendRequest"]
    assert {"from", "to", "subject", "html", "text", "attachments", "scheduled_at"} <= set(
        send_schema["properties"]
    )
    # from is optional: a template's, the key's or [compat]'s default sender stands in.
    assert send_schema["required"] == ["to"]


def test_smtp_and_http_share_one_queue(api) -> None:  # type: ignore[no-untyped-def]
    import smtplib

    relay = api.relay
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as s:
        s.login("apikey", api.key)
        s.sendmail("hello@example.com", ["smtp@example.net"], b"Subject: via smtp\r\n\r\nx\r\n")
    api.post("/v1/messages/send", json=BASE)
    listed = api.get("/v1/messages").json()["data"]
    assert sorted(m["subject"] for m in listed) == ["s", "via smtp"]


def test_metrics_endpoint(api) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        assert api.post("/v1/messages/send", json=BASE).status_code == 202
    relay = api.relay
    qid = api.get("/v1/messages").json()["data"][0]["id"]
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    text = httpx.get(f"{relay.http_url}/metrics").text
    assert 'mailgate_messages_accepted_total{source="http"} 2.0' in text
    assert 'mailgate_delivery_results_total{provider="capture",status="sent"}' in text
    assert 'mailgate_deliveries{status="sent"}' in text
    assert "mailgate_queue_oldest_pending_seconds" in text
    # The event loop lag is sampled every 20 ms from the start.
    time.sleep(0.1)
    text = httpx.get(f"{relay.http_url}/metrics").text
    count = re.search(r"^mailgate_event_loop_lag_seconds_count (\S+)$", text, re.M)
    assert count is not None and float(count.group(1)) >= 1
    assert 'mailgate_event_loop_lag_seconds_bucket{le="0.005"}' in text


def test_batch_messages_with_templates(api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tpl = api.post(
        "/v1/templates", json={"name": "t", "subject": "Order {{ n }}", "text": "Order {{ n }}"}
    ).json()["data"]
    items = [
        {
            "from": "hello@example.com",
            "to": f"u{i}@example.net",
            "template_id": tpl["id"],
            "template_data": {"n": i},
        }
        for i in range(3)
    ]
    items.append(
        {
            "from": "hello@example.com",
            "to": "x@example.net",
            "template_id": "missing",
            "template_data": {},
        }
    )
    data = api.post("/v1/messages/batch", json={"messages": items}).json()["data"]
    assert [m["status"] for m in data["messages"]] == ["queued"] * 3 + ["rejected"]
    assert data["messages"][3]["error"]["code"] == "invalid_template"
    subjects = sorted(m["Subject"] for m in delivered(tmp_path, 3))
    assert subjects == ["Order 0", "Order 1", "Order 2"]


def test_events_carry_api_names_and_metadata(api) -> None:  # type: ignore[no-untyped-def]
    """Store types map to the seed's names (events/names.py); a bounce category and an
    engagement event's user agent, IP and url appear in metadata."""
    import json

    from sqlalchemy import insert

    from mailgate.store.rows import event_row
    from mailgate.store.schema import events

    resp = api.post(
        "/v1/messages/send",
        json={"from": "hello@example.com", "to": "u@example.net", "subject": "s", "text": "x"},
    )
    qid = resp.json()["data"]["id"]
    relay = api.relay
    relay.wait_status(qid, lambda s: s["u@example.net"] == "sent")
    opened = {"user_agent": "Mozilla/5.0", "ip": "192.0.2.9", "url": ""}
    rows = [
        event_row(qid, 0, "u@example.net", "opened", time.time(), data=json.dumps(opened)),
        event_row(qid, 0, "u@example.net", "retry", time.time(), detail="retry requested"),
        event_row(
            qid,
            0,
            "u@example.net",
            "bounced",
            time.time(),
            "",
            "550 5.1.1 no such user",
            category="InvalidRecipient",
        ),
    ]

    async def add() -> None:
        async with relay.store.engine.begin() as conn:
            await conn.execute(insert(events), rows)

    relay.call(add())
    data = api.get(f"/v1/messages/{qid}/events").json()["data"]
    assert [e["type"] for e in data] == ["queued", "sent", "opened", "requeued", "bounced"]
    assert data[0]["metadata"] == {} and data[1]["metadata"]["provider"] == "capture"
    assert data[2]["metadata"] == {"user_agent": "Mozilla/5.0", "ip": "192.0.2.9"}
    assert data[3]["metadata"] == {"detail": "retry requested"}
    assert data[4]["metadata"] == {
        "response": "550 5.1.1 no such user",
        "category": "InvalidRecipient",
    }


def test_scheduled_mail_and_jobs_page_on(api) -> None:  # type: ignore[no-untyped-def]
    """offset was ignored and there was no meta: past the first page nothing was reachable."""
    when = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"from": "hello@example.com", "subject": "s", "text": "x"}
    for i in range(3):
        to = f"s{i}@example.net"
        r = api.post("/v1/messages/send", json={**body, "to": to, "scheduled_at": when})
        assert r.status_code == 202, r.text
        r = api.post("/v1/messages/batch", json={**body, "recipient_variables": {to: {}}})
        assert r.status_code == 202, r.text
    for path in ("/v1/messages/scheduled", "/v1/jobs"):
        seen: list[str] = []
        offset = 0
        while True:
            page = api.get(path, params={"limit": 2, "offset": offset}).json()
            seen += [row["id"] for row in page["data"]]
            assert page["meta"]["limit"] == 2 and page["meta"]["offset"] == offset
            if not page["meta"]["has_more"]:
                break
            offset += 2
        assert len(seen) == len(set(seen)) >= 3, (path, seen)


def test_other_lists_clamp_their_limit(api) -> None:  # type: ignore[no-untyped-def]
    for path, most in (
        ("/v1/jobs", 100),
        ("/v1/templates", 1000),
        ("/v1/messages/scheduled", 1000),
    ):
        resp = api.get(path, params={"limit": most + 1})
        assert resp.status_code == 200, (path, resp.text)
        assert error_of(api.get(path, params={"limit": 0}))["field"] == "limit"


def _read_answers(sock: socket.socket, bodies: list[bool]) -> list[tuple[bytes, bytes]]:
    """HTTP answers (head, body) read off ``sock`` by their Content-Length, one per item
    of ``bodies`` (False: the answer to a HEAD request, or a 100: no body follows)."""
    data = b""
    answers: list[tuple[bytes, bytes]] = []
    while len(answers) < len(bodies):
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end]
            length = -1 if bodies[len(answers)] else 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and length < 0:
                    length = int(value)
            assert length >= 0, head
            if len(data) >= end + 4 + length:
                answers.append((head, data[end + 4 : end + 4 + length]))
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
    assert data == b"", data  # nothing more than the answers asked for
    return answers


def test_answers_on_one_connection_arrive_whole_and_in_order(relay) -> None:  # type: ignore[no-untyped-def]
    """The server sends each answer's head with its body (http_protocol.py): pipelined
    requests, a HEAD request (no body follows its head) and a 100 Continue all arrive."""
    key = relay.create_key("pipeline")
    host, port = relay.http_url.removeprefix("http://").split(":")
    body = json.dumps(
        {"from": "a@example.com", "to": "b@example.org", "subject": "s", "text": "t"}
    ).encode()
    send = (
        b"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        (h1, b1), (h2, b2), (h3, b3) = _read_answers(sock, [True, False, True])
        assert h1.startswith(b"HTTP/1.1 200") and json.loads(b1) == {"status": "ok"}
        assert h2.startswith(b"HTTP/1.1 200") and b2 == b""
        assert h3.startswith(b"HTTP/1.1 200") and json.loads(b3) == {"status": "ok"}

        sock.sendall(send + b"Expect: 100-continue\r\n\r\n")
        ((h4, _),) = _read_answers(sock, [False])
        assert h4.startswith(b"HTTP/1.1 100"), h4
        sock.sendall(body)
        ((h5, b5),) = _read_answers(sock, [True])
        assert h5.startswith(b"HTTP/1.1 202"), (h5, b5)
        assert json.loads(b5)["data"]["status"] == "queued"


@pytest.mark.parametrize("key", ["", "wrong-key"])
def test_a_refused_key_is_read_by_a_client_still_sending_its_body(relay, key: str) -> None:  # type: ignore[no-untyped-def]
    """A 401 made before the body is read: the body is read and dropped first, so a
    client sending 2 MB reads its 401 rather than a connection reset."""
    parts = [b'{"text": "' + b"x" * 500_000] * 4 + [b'"}']
    head = f"Content-Length: {sum(len(p) for p in parts)}\r\n"
    answer = _slow_post(relay.http_url, key, head, parts)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "unauthorized"


def test_every_error_has_its_three_keys(api) -> None:  # type: ignore[no-untyped-def]
    """code, message and field (null when no field is at fault), as docs/api.md shows."""
    import httpx

    answers = [
        httpx.post(str(api.base_url) + "/v1/messages/send", json={}),  # 401, no key
        api.get("/v1/messages/nope"),  # 404
        api.post("/v1/messages/send", content=b"{not json"),  # 400
        api.get("/v1/no-such-path"),  # 404 route
    ]
    for answer in answers:
        err = answer.json()["error"]
        assert set(err) == {"code", "message", "field"} and err["field"] is None, answer.text

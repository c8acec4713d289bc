"""Story: clients written for MailSage, MailStack and MessagePipe work against mailgate with
only their base URL and key changed: every example of their documentation, replayed
verbatim (comments stripped), is answered in that API's shapes, and the mail goes out."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RelayRunner
from fakes.upstream import Upstream

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def strip_comments(text: str) -> Any:
    """The seeds' JSON with its ``// ...`` and ``# ...`` comments removed, parsed."""
    lines = []
    for line in text.splitlines():
        for marker in (" //", " #"):
            at = line.find(marker)
            if at >= 0 and line[:at].count('"') % 2 == 0:
                line = line[:at]
        lines.append(line)
    return json.loads("\n".join(lines))


# --- the seeds' examples, verbatim ---------------------------------------------------------

MAILSAGE_SEND = """{
    "template_id": "id",          // Optional: Template ID
    "recipient": {
        "email": "user@example.com",
        "variables": {              // Optional: Required if using template
            "name": "John",
            "company": "Acme Inc"
        }
    },
    "subject": "Welcome to MailSage!",
    "body": "Email content...",     // Optional: Required if no template_id
    "smtp_id": "id"               // Optional: Uses default if not specified
}"""

# The fetch and requests examples send the same body.
MAILSAGE_SEND_CLIENT = """{
    "recipient": {
      "email": "user@example.com",
      "variables": { "name": "John" }
    },
    "template_id": "template-123",
    "subject": "Welcome!"
}"""

MAILSAGE_BATCH = """{
    "template_id": "uuid",
    "recipients": [
        {
            "email": "user1@example.com",
            "variables": {
                "name": "John",
                "plan": "Pro"
            }
        },
        {
            "email": "user2@example.com",
            "variables": {
                "name": "Jane",
                "plan": "Enterprise"
            }
        }
    ],
    "subject": "Welcome to MailSage!",
    "smtp_id": "uuid",           // Optional
    "campaign_id": "uuid"        // Optional, for tracking
}"""

MAILSAGE_CONTROL = """{
    "action": "pause" // or "resume" or "stop"
}"""

MAILSAGE_GUIDE_BASIC = """{
    "recipient": {
      "email": "user@example.com"
    },
    "subject": "Hello from MailSage",
    "body": "This is a test email."
  }"""

MAILSAGE_GUIDE_TEMPLATE = """{
    "template_id": "template_123",
    "recipient": {
      "email": "user@example.com",
      "variables": {
        "name": "John",
        "company": "Acme Inc"
      }
    },
    "subject": "Welcome to {{ company }}!"
  }"""

MAILSAGE_GUIDE_BATCH = """{
    "template_id": "template_123",
    "recipients": [
      {
        "email": "user1@example.com",
        "variables": {
          "name": "John",
          "company": "Acme Inc"
        }
      },
      {
        "email": "user2@example.com",
        "variables": {
          "name": "Jane",
          "company": "Beta Corp"
        }
      }
    ],
    "subject": "Welcome to {{ company }}!"
  }"""

MAILSAGE_GUIDE_CONTROL = """{
    "action": "pause"  # or "resume" or "stop"
  }"""

MAILSTACK_BATCH = """{
    "emails": [
      { "from": "hi@you.com", "to": "a@example.com", "subject": "Hi A", "text": "Hello A" },
      { "from": "hi@you.com", "to": "b@example.com", "subject": "Hi B", "text": "Hello B" }
    ]
  }"""

MAILSTACK_SEND = """{
    "from": "hi@you.com",
    "to": "user@example.com",
    "subject": "Welcome, {{ name }}",
    "html": "<p>Hi {{ name }}, your code is {{ code }}.</p>",
    "variables": { "name": "Sam", "code": "8421" },
    "tags": "welcome,onboarding"
  }"""

MESSAGEPIPE_SEND = """{
"templateId": "template-uuid",
"to": "user@example.com",
"subject": "Welcome to Our Platform",
"variables": {
"firstName": "John",
"companyName": "Nobu",
"activationUrl": "https://app.example.com/activate?token=xyz"
}
}"""

MESSAGEPIPE_BULK = """{
"templateId": "template-uuid",
"subject": "Monthly Newsletter",
"recipients": [
"user1@example.com",
"user2@example.com"
],
"variables": {
"companyName": "Nobu",
"monthYear": "January 2024"
}
}"""

TEMPLATES = {
    "id": ("Hello {{ name }}", "Hi {{ name }} of {{ company }}"),
    "template-123": ("Welcome {{ name }}", "Hi {{ name }}"),
    "uuid": ("Welcome", "Hi {{ name }}, your plan: {{ plan }}"),
    "template_123": ("Welcome", "Hi {{ name }} of {{ company }}"),
    "template-uuid": (
        "Hello",
        "Hi {{ firstName }} at {{ companyName }} {{ monthYear|default('') }}",
    ),
}


def maildir(path: Path, name: str) -> dict[str, Any]:
    return {"name": name, "kind": "maildir", "path": str(path / name)}


@pytest.fixture
def compat_relay(relay_factory: Callable[..., RelayRunner], tmp_path: Path) -> RelayRunner:
    return start_compat(relay_factory, tmp_path)


def start_compat(
    relay_factory: Callable[..., RelayRunner], tmp_path: Path, **sections: Any
) -> RelayRunner:
    relay = relay_factory(
        domains=[{"name": "example.com"}, {"name": "you.com"}],
        providers=[
            maildir(tmp_path, "capture"),
            {**maildir(tmp_path, "id"), "priority": 1000},
            {**maildir(tmp_path, "uuid"), "priority": 1000},
        ],
        compat={"default_from": "app@example.com"},
        **sections,
    )
    admin = relay.create_key("admin", scope="admin")
    for template_id, (subject, text) in TEMPLATES.items():
        created = httpx.post(
            f"{relay.http_url}/v1/templates",
            json={"id": template_id, "name": template_id, "subject": subject, "text": text},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
    relay.key = relay.create_key("client")  # type: ignore[attr-defined]
    return relay


def bearer(relay: RelayRunner) -> dict[str, str]:
    return {"Authorization": f"Bearer {relay.key}"}  # type: ignore[attr-defined]


def captured(tmp_path: Path, provider: str) -> list[bytes]:
    folder = tmp_path / provider / "new"
    return [p.read_bytes() for p in folder.iterdir()] if folder.exists() else []


def check_mailsage_queued(body: dict[str, Any], message: str) -> None:
    assert body["message"] == message
    assert body["status"] == "queued"
    for name in ("job_id", "task_id", "tracking_id"):
        assert isinstance(body[name], str) and body[name], name


def check_job(body: dict[str, Any]) -> None:
    assert isinstance(body["id"], str)
    assert body["status"] in ("queued", "processing", "paused", "stopped", "completed")
    progress = body["progress"]
    assert set(progress) == {"total", "sent", "failed", "pending", "percentage"}
    for name in ("total", "sent", "failed", "pending"):
        assert isinstance(progress[name], int)
    assert isinstance(progress["percentage"], float)
    assert progress["total"] == progress["sent"] + progress["failed"] + progress["pending"]
    assert body["started_at"] is None or ISO.match(body["started_at"])
    assert ISO.match(body["updated_at"])


def test_mailsage_examples(compat_relay: RelayRunner, tmp_path: Path) -> None:
    url = compat_relay.http_url + "/api/v1"
    with httpx.Client(base_url=url, headers=bearer(compat_relay)) as client:
        r = client.post("/emails/send", json=strip_comments(MAILSAGE_SEND))
        assert r.status_code == 202, r.text
        check_mailsage_queued(r.json(), "Email queued successfully")
        task = r.json()["task_id"]
        compat_relay.wait_status(task, lambda s: set(s.values()) == {"sent"})
        (sent,) = captured(tmp_path, "id")  # smtp_id "id": only that provider
        assert b"Email content..." in sent and b"Subject: Welcome to MailSage!" in sent
        assert b"From: app@example.com" in sent  # [compat] default_from

        for example in (MAILSAGE_SEND_CLIENT, MAILSAGE_GUIDE_BASIC, MAILSAGE_GUIDE_TEMPLATE):
            r = client.post("/emails/send", json=strip_comments(example))
            assert r.status_code == 202, r.text
            check_mailsage_queued(r.json(), "Email queued successfully")

        r = client.post("/emails/batch", json=strip_comments(MAILSAGE_BATCH))
        assert r.status_code == 202, r.text
        body = r.json()
        check_mailsage_queued(body, "Batch email queued successfully")
        assert body["recipient_count"] == 2
        job_id = body["job_id"]

        for path in (f"/emails/jobs/{job_id}/status", f"/emails/jobs/{job_id}"):
            r = client.get(path)
            assert r.status_code == 200, r.text
            check_job(r.json())
            assert r.json()["id"] == job_id and r.json()["progress"]["total"] == 2

        r = client.post("/emails/batch", json=strip_comments(MAILSAGE_GUIDE_BATCH))
        assert r.status_code == 202, r.text
        assert r.json()["recipient_count"] == 2
        compat_relay.wait_status(r.json()["task_id"], lambda s: set(s.values()) == {"sent"})
        r = client.get(f"/emails/jobs/{r.json()['job_id']}")
        assert r.json()["status"] == "completed" and r.json()["progress"]["percentage"] == 100.0

    rendered = b"".join(captured(tmp_path, "uuid"))
    assert b"your plan: Pro" in rendered and b"your plan: Enterprise" in rendered
    templated = b"".join(captured(tmp_path, "capture"))
    assert b"Subject: Welcome to Acme Inc!" in templated  # {{ var }} in the subject


def test_a_mailsage_single_send_is_not_bulk_mail(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A single send is a job of one (its job_id can be polled) but no campaign: a
    welcome or password-reset mail got a one-click List-Unsubscribe, as a batch does."""
    relay = start_compat(relay_factory, tmp_path, http={"public_url": "https://mail.test"})
    url = relay.http_url + "/api/v1"
    one = {"recipient": {"email": "u@dest.test"}, "subject": "Reset", "body": "Your code"}
    with httpx.Client(base_url=url, headers=bearer(relay)) as client:
        r = client.post("/emails/send", json=one)
        assert r.status_code == 202, r.text
        relay.wait_status(r.json()["task_id"], lambda s: set(s.values()) == {"sent"})
        (single,) = captured(tmp_path, "capture")
        assert b"List-Unsubscribe" not in single
        many = {"recipients": [{"email": "a@dest.test"}], "subject": "News", "body": "Hi"}
        r = client.post("/emails/batch", json=many)
        assert r.status_code == 202, r.text
        relay.wait_status(r.json()["task_id"], lambda s: set(s.values()) == {"sent"})
    batch = [m for m in captured(tmp_path, "capture") if b"Subject: News" in m]
    assert len(batch) == 1 and b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in batch[0]


def test_a_mailsage_plain_body_stays_plain_text(compat_relay: RelayRunner, tmp_path: Path) -> None:
    """An address in <> or a comparison is no markup: such bodies went out as html, the
    address hidden and the lines joined. Empty variables make no template of the body."""
    url = compat_relay.http_url + "/api/v1"
    bodies = {
        "plain": "Questions? Write to Support <support@example.com>.\nif a < b and c > d",
        "html": "<p>Hi <b>there</b></p>",
    }
    with httpx.Client(base_url=url, headers=bearer(compat_relay)) as client:
        for subject, body in bodies.items():
            one = {"recipient": {"email": "u@dest.test"}, "subject": subject, "body": body}
            r = client.post("/emails/send", json=one)
            assert r.status_code == 202, r.text
            compat_relay.wait_status(r.json()["task_id"], lambda s: set(s.values()) == {"sent"})
        # The seed's clients send "variables": {} always: no variables, no template.
        literal = {
            "recipient": {"email": "u@dest.test", "variables": {}},
            "subject": "braces",
            "body": "Use {{ name }} in your templates; {# is no comment",
        }
        r = client.post("/emails/send", json=literal)
        assert r.status_code == 202, r.text
        compat_relay.wait_status(r.json()["task_id"], lambda s: set(s.values()) == {"sent"})
    sent = {m.split(b"Subject: ")[1].split(b"\r\n")[0]: m for m in captured(tmp_path, "capture")}
    assert b"Use {{ name }} in your templates; {# is no comment" in sent[b"braces"]
    assert b"Content-Type: text/plain" in sent[b"plain"]
    assert b"<support@example.com>" in sent[b"plain"]
    assert b"Content-Type: text/html" in sent[b"html"]


def test_mailsage_job_control(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    relay = start_compat(relay_factory, tmp_path, delivery={"enabled": False})
    with httpx.Client(base_url=relay.http_url + "/api/v1", headers=bearer(relay)) as client:
        r = client.post("/emails/batch", json=strip_comments(MAILSAGE_GUIDE_BATCH))
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        statuses = []
        for example in (MAILSAGE_CONTROL, MAILSAGE_GUIDE_CONTROL):
            r = client.post(f"/emails/jobs/{job_id}/control", json=strip_comments(example))
            assert r.status_code == 200, r.text
            check_job(r.json())
            statuses.append(r.json()["status"])
        assert statuses == ["paused", "paused"]
        r = client.post(f"/emails/jobs/{job_id}/control", json={"action": "resume"})
        assert r.status_code == 200 and r.json()["status"] == "queued"
        r = client.post(f"/emails/jobs/{job_id}/control", json={"action": "stop"})
        assert r.status_code == 200 and r.json()["status"] == "stopped"
        progress = r.json()["progress"]
        assert progress == {"total": 2, "sent": 0, "failed": 2, "pending": 0, "percentage": 0.0}
        r = client.post(f"/emails/jobs/{job_id}/control", json={"action": "resume"})
        assert r.status_code == 400 and r.json()["code"] == "job_not_active"


def test_mailsage_errors(compat_relay: RelayRunner) -> None:
    url = compat_relay.http_url + "/api/v1"
    with httpx.Client(base_url=url, headers=bearer(compat_relay)) as client:
        cases = [
            ({"recipient": {"email": "not an address"}, "subject": "x", "body": "y"}, 400),
            ({"recipient": {"email": "a@b.test"}, "template_id": "nope", "subject": "x"}, 404),
            ({"recipient": {"email": "a@b.test"}, "smtp_id": "nope", "body": "x"}, 404),
            ({"recipient": "a@b.test"}, 400),
        ]
        for body, status in cases:
            r = client.post("/emails/send", json=body)
            assert r.status_code == status, (body, r.text)
            assert set(r.json()) == {"error", "code"} and r.json()["error"], r.json()
        assert client.post("/emails/send", content=b"{nope").status_code == 400
        r = client.post("/emails/jobs/nope/control", json={"action": "pause"})
        assert r.status_code == 404
        ok = client.post("/emails/batch", json=strip_comments(MAILSAGE_BATCH)).json()
        r = client.post(f"/emails/jobs/{ok['job_id']}/control", json={"action": "explode"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_action"
    r = httpx.post(url + "/emails/send", json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and set(r.json()) == {"error", "code"}


def test_mailstack_quoted_names_with_commas(compat_relay: RelayRunner, tmp_path: Path) -> None:
    """A "to" string is split at the commas outside quotes: '"Doe, John" <jd@...>' was
    split into '"Doe' (a 400) and 'John" <jd@...>'."""
    with httpx.Client(base_url=compat_relay.http_url, headers=bearer(compat_relay)) as client:
        r = client.post(
            "/v1/emails",
            json={
                "from": "app@example.com",
                "to": '"Doe, John" <jd@dest.test>, ann@dest.test',
                "subject": "commas",
                "text": "hi",
            },
        )
        assert r.status_code == 202, r.text
    deadline = time.monotonic() + 10
    while len(captured(tmp_path, "capture")) < 2:
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.05)
    (first, *_) = captured(tmp_path, "capture")
    assert b'To: "Doe, John" <jd@dest.test>, ann@dest.test' in first


def test_mailstack_examples(compat_relay: RelayRunner, tmp_path: Path) -> None:
    admin = compat_relay.create_key("ops", scope="admin")
    added = httpx.post(
        f"{compat_relay.http_url}/v1/suppressions",
        json={"email": "b@example.com", "reason": "manual"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    if added.status_code == 404:  # no suppressions API: add it to the store directly
        from mailgate.models import Suppression

        compat_relay.call(
            compat_relay.store.suppressions.add(
                [Suppression("b@example.com", "manual", "", "", 0.0)]
            )
        )
        compat_relay.app.suppressions.added(["b@example.com"])  # type: ignore[union-attr]
    with httpx.Client(base_url=compat_relay.http_url, headers=bearer(compat_relay)) as client:
        r = client.post("/v1/emails/batch", json=strip_comments(MAILSTACK_BATCH))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["accepted"] == 1 and body["rejected"] == 1
        first, second = body["results"]
        assert first["index"] == 0 and first["status"] == "queued" and isinstance(first["id"], str)
        assert second == {"index": 1, "status": "rejected", "error": "Recipient is suppressed."}

        r = client.post("/v1/emails", json=strip_comments(MAILSTACK_SEND))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        email_id = r.json()["id"]
        compat_relay.wait_status(email_id, lambda s: set(s.values()) == {"sent"})
        r = client.get(f"/v1/emails/{email_id}")
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["id"] == email_id
        assert got["fromEmail"] == "hi@you.com" and got["toEmail"] == "user@example.com"
        assert got["subject"] == "Welcome, Sam"
        assert got["status"] == "Sent"
        assert isinstance(got["providerMessageId"], str) and got["providerMessageId"]
        assert got["errorMessage"] is None
        assert got["tags"] == "welcome,onboarding"
        for name in ("queuedAt", "sentAt", "createdAt"):
            assert ISO.match(got[name]), name
    sent = [m for m in captured(tmp_path, "capture") if b"Welcome, Sam" in m]
    assert len(sent) == 1 and b"your code is 8421" in sent[0]


def test_mailstack_errors_and_quota(compat_relay: RelayRunner) -> None:
    from mailgate.credentials import create_key

    metered = compat_relay.call(create_key(compat_relay.store, "metered", quota="2/d"))
    email = {"from": "hi@you.com", "to": "a@example.com", "subject": "x", "text": "y"}
    with httpx.Client(
        base_url=compat_relay.http_url, headers={"Authorization": f"Bearer {metered}"}
    ) as client:
        assert client.post("/v1/emails", json=email).status_code == 202
        r = client.post("/v1/emails/batch", json={"emails": [email, email]})
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 1 and r.json()["rejected"] == 1
        assert r.json()["results"][1]["error"].startswith("Payment Required")
        r = client.post("/v1/emails", json=email)
        assert r.status_code == 402 and set(r.json()) == {"error", "code"}
        retry_after = int(r.headers["retry-after"])
        r = client.post("/v1/emails/batch", json={"emails": [email]})
        assert r.status_code == 402
        assert abs(int(r.headers["retry-after"]) - retry_after) <= 2  # as the single send
    with httpx.Client(base_url=compat_relay.http_url, headers=bearer(compat_relay)) as client:
        r = client.post("/v1/emails", json={"from": "hi@you.com", "subject": "x", "text": "y"})
        assert r.status_code == 400 and r.json()["error"]
        r = client.post("/v1/emails", json={**email, "from": "hi@nope.test"})
        assert r.status_code == 400, r.text
        r = client.post("/v1/emails", json={**email, "templateId": "missing"})
        assert r.status_code == 404
        r = client.post("/v1/emails", json={**email, "unknownField": 1, "cc": None})
        assert r.status_code == 202, r.text  # unknown fields ignored, null is absent
        r = client.post("/v1/emails/batch", json={"emails": [email] * 101})
        assert r.status_code == 400
        r = client.post("/v1/emails/batch", json={"emails": "nope"})
        assert r.status_code == 400
        r = client.get("/v1/emails/does-not-exist")
        assert r.status_code == 404
        other = httpx.post(
            f"{compat_relay.http_url}/v1/emails",
            json=email,
            headers={"Authorization": f"Bearer {metered}"},
        )
        assert other.status_code == 402
        mine = client.post("/v1/emails", json=email).json()["id"]
        r = httpx.get(
            f"{compat_relay.http_url}/v1/emails/{mine}",
            headers={"Authorization": f"Bearer {metered}"},
        )
        assert r.status_code == 404  # another key's message


def test_messagepipe_examples_and_failover(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as primary, Upstream() as secondary:
        primary.stop_listening()  # the priority-1 provider is dead
        relay = relay_factory(
            providers=[
                {
                    "name": "primary",
                    "kind": "smtp",
                    "host": "127.0.0.1",
                    "port": primary.port,
                    "tls": "none",
                    "priority": 1,
                },
                {
                    "name": "secondary",
                    "kind": "smtp",
                    "host": "127.0.0.1",
                    "port": secondary.port,
                    "tls": "none",
                    "priority": 2,
                },
            ],
            compat={"default_from": "app@example.com", "send_wait": "10s"},
        )
        admin = relay.create_key("admin", scope="admin")
        created = httpx.post(
            f"{relay.http_url}/v1/templates",
            json={
                "id": "template-uuid",
                "name": "t",
                "subject": "Hello",
                "text": "Hi {{ firstName|default('you') }} at {{ companyName }}",
            },
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
        key = relay.create_key("pipe")
        headers = {"x-api-key": key}
        with httpx.Client(base_url=relay.http_url, headers=headers, timeout=30) as client:
            r = client.post("/email/send", json=strip_comments(MESSAGEPIPE_SEND))
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["message"] == "Email sent successfully"
            assert body["provider"] == "secondary"
            assert isinstance(body["messageId"], str) and isinstance(body["deliveryLogId"], str)

            r = client.post("/email/send-bulk", json=strip_comments(MESSAGEPIPE_BULK))
            assert r.status_code == 201, r.text
            bulk = r.json()
            assert bulk["message"] == "Bulk email processed: 2 sent, 0 failed"
            assert bulk["success"] is True
            assert [x["recipient"] for x in bulk["results"]] == [
                "user1@example.com",
                "user2@example.com",
            ]
            for row in bulk["results"]:
                assert row["success"] is True and row["provider"] == "secondary"
                assert isinstance(row["messageId"], str) and isinstance(row["deliveryLogId"], str)
            secondary.wait_for(3)

            secondary.faults.mail_reply = "421 4.7.0 Service not available"  # all dead now
            r = client.post("/email/send", json=strip_comments(MESSAGEPIPE_SEND))
            assert r.status_code == 500, r.text
            failed = r.json()
            assert failed["message"].startswith("All providers failed: ")
            assert "primary" in failed["message"] and "secondary" in failed["message"]
            assert failed["error"] == "Internal Server Error" and failed["statusCode"] == 500
            log_id = failed["deliveryLogId"]
            message_id = log_id.rsplit(".", 1)[0]
            assert relay.statuses(message_id) == {"user@example.com": "failed"}
            assert [
                m for m in relay.call(relay.store.list_messages()) if m["source"] == "dsn"
            ] == []

            r = client.post("/email/send-bulk", json=strip_comments(MESSAGEPIPE_BULK))
            assert r.status_code == 201
            assert r.json()["message"] == "Bulk email processed: 0 sent, 2 failed"
            assert r.json()["success"] is False
            bulk_ids = [x["deliveryLogId"] for x in r.json()["results"]]

            stats = client.get("/email/queue-stats").json()
            assert set(stats) == {"pending", "processing", "failed", "completed"}
            assert stats["failed"] == 3 and stats["completed"] == 3

            secondary.faults.mail_reply = None  # the provider is back: retry
            r = client.post("/email/retry", json={"deliveryLogId": log_id})
            assert r.status_code == 201, r.text
            assert r.json() == {"message": "Email added to retry queue successfully"}
            relay.wait_status(message_id, lambda s: s == {"user@example.com": "sent"})
            r = client.post("/email/retry-multiple", json={"deliveryLogIds": bulk_ids})
            assert r.status_code == 201
            assert r.json()["message"] == "Emails processed for retry"
            secondary.wait_for(6, timeout=20)

            r = client.post("/email/retry", json={"deliveryLogId": log_id})
            assert r.status_code == 400  # sent: nothing to retry
            r = client.post("/email/retry", json={"deliveryLogId": "nope.0"})
            assert r.status_code == 404
            assert set(r.json()) == {"message", "error", "statusCode"}

            r = client.post(
                "/email/send", json={**strip_comments(MESSAGEPIPE_SEND), "templateId": "missing"}
            )
            assert r.status_code == 404
            assert r.json() == {"error": "Template not found", "statusCode": 404}


def test_messagepipe_send_waits_for_another_nodes_attempt(
    relay_factory, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A node that does not deliver answers the send once another node has attempted it."""
    common = {
        "database": {"url": pg_url},
        "compat": {"default_from": "app@example.com", "send_wait": "15s"},
    }
    front = relay_factory(
        server={"data_dir": str(tmp_path / "front"), "node_id": "front"},
        delivery={"enabled": False},
        **common,
    )
    relay_factory(server={"data_dir": str(tmp_path / "back"), "node_id": "back"}, **common)
    admin = front.create_key("admin", scope="admin")
    created = httpx.post(
        f"{front.http_url}/v1/templates",
        json={"id": "welcome", "name": "w", "subject": "Hello", "text": "Hi"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert created.status_code == 201, created.text
    r = httpx.post(
        f"{front.http_url}/email/send",
        json={"templateId": "welcome", "to": "user@example.com"},
        headers={"x-api-key": front.create_key("pipe")},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Email sent successfully"
    assert r.json()["provider"] == "capture"


def test_only_the_enabled_dialects_are_served(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(compat={"enabled": ["mailstack"], "default_from": "app@example.com"})
    headers = {"Authorization": f"Bearer {relay.create_key('app')}"}
    email = {"from": "app@example.com", "to": "a@example.net", "subject": "s", "text": "t"}
    assert httpx.post(f"{relay.http_url}/v1/emails", json=email, headers=headers).status_code == 202
    for path in ("/api/v1/emails/send", "/email/send"):
        r = httpx.post(f"{relay.http_url}{path}", json={}, headers=headers)
        assert r.status_code == 404, path

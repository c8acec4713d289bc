"""Webhook pieces as pure functions: the retry schedule, signatures, address checks."""

from __future__ import annotations

import base64
import ipaddress
import time

import pytest
from standardwebhooks.webhooks import Webhook

from mailgate.events.ssrf import UrlRefused, check_url, refused_address
from mailgate.events.webhook_models import WebhookAnswer
from mailgate.events.webhook_process import retry_after
from mailgate.events.webhook_signing import new_secret, secret_key, signature
from mailgate.events.webhook_types import EVENT_TYPES, subscription
from mailgate.events.webhooks import SCHEDULE, next_attempt

FAILED = WebhookAnswer(500, "HTTP 500", None)


def test_the_schedule_is_the_spec_and_ends_failed() -> None:
    mid = [next_attempt(n, FAILED, 0.0, rand=lambda: 0.5) for n in range(1, 10)]
    assert mid == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert next_attempt(10, FAILED, 0.0) is None  # ten attempts, then failed
    assert len(SCHEDULE) == 9


def test_jitter_stays_within_a_fifth() -> None:
    assert next_attempt(1, FAILED, 100.0, rand=lambda: 0.0) == pytest.approx(104.0)
    assert next_attempt(1, FAILED, 100.0, rand=lambda: 1.0) == pytest.approx(106.0)


def test_retry_after_is_honoured_but_capped_at_a_day() -> None:
    later = WebhookAnswer(503, "", 600.0)
    assert next_attempt(1, later, 0.0, rand=lambda: 0.5) == 600.0
    huge = WebhookAnswer(429, "", 10**9)
    assert next_attempt(1, huge, 0.0, rand=lambda: 0.5) == 86400.0
    assert retry_after("120", 0.0) == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 60) == pytest.approx(60)
    assert retry_after("soon", 0.0) is None and retry_after(None, 0.0) is None


def test_signatures_verify_with_the_spec_library() -> None:
    secret = new_secret()
    assert 24 <= len(secret_key(secret)) <= 64
    body = b'{"type":"message.sent"}'
    ts = int(time.time())  # the library refuses a timestamp far from now
    other = new_secret()
    sig = signature([secret_key(other), secret_key(secret)], "msg_1", ts, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert Webhook(secret).verify(body, headers) == {"type": "message.sent"}
    assert Webhook(other).verify(body, headers) == {"type": "message.sent"}


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "abc", "whsec_!!!", "whsec_" + base64.b64encode(b"x" * 8).decode()],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        secret_key(secret)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.100.100.200", True),  # carrier-grade NAT (Alibaba's metadata)
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),  # AWS metadata over IPv6
        ("::ffff:10.0.0.1", True),
        ("2002:a9fe:a9fe::", True),  # 6to4 around 169.254.169.254
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 around it
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # Teredo, client 192.0.2.45
        ("2002:5db8:d70e::1", False),  # 6to4 around a public address
        ("93.184.215.14", False),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False),
    ],
)
def test_private_and_special_addresses(address: str, refused: bool) -> None:
    assert (refused_address(ipaddress.ip_address(address)) is not None) is refused


@pytest.mark.parametrize(
    "url",
    [
        "http://a.test/x\r\nX-Injected: 1",
        " http://a.test/",
        "http://a.test/a b",
        "http://a\t.test/",
    ],
)
def test_urls_with_spaces_or_control_characters_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="spaces or control characters"):
        check_url(url, allow_private=True)


def test_subscriptions() -> None:
    assert subscription(["*"]) == list(EVENT_TYPES)
    assert subscription(["job.completed", "message.sent"]) == ["message.sent", "job.completed"]
    with pytest.raises(ValueError, match="unknown event type"):
        subscription(["message.nope"])
    with pytest.raises(ValueError, match="no event types"):
        subscription([])


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h", "http://localhost:9/h", "http://[::1]:9/"])
def test_a_send_to_a_private_address_is_refused_at_send_time(url: str) -> None:
    """The check at configuration is repeated at each send (the name may resolve
    elsewhere by then): literal addresses before connecting, names in the resolver."""
    import asyncio

    from mailgate.events.webhook_models import WebhookHello, WebhookRequest
    from mailgate.events.webhook_process import Poster

    row = {
        "type": "queued",
        "at": 0.0,
        "message_id": "m",
        "recipient": "r@example.net",
        "subject": "",
        "tags": "[]",
        "metadata": "{}",
        "job_id": None,
        "provider": "",
        "response": "",
        "category": "",
        "detail": "",
        "data": "",
    }

    async def post() -> WebhookAnswer:
        poster = Poster(WebhookHello(allow_private=False, timeout=2.0, log_level="info"))
        try:
            return await poster.post(WebhookRequest("msg_1", url, (b"k" * 32,), row))
        finally:
            await poster.close()

    answer = asyncio.run(post())
    assert answer.status is None and answer.error.startswith("refused:"), answer

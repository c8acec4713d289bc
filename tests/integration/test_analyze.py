"""Story: an application asks whether a message is fit to send (POST /v1/messages/analyze).

A live relay, a real HTTP client, and the sender domains' DNS served by the fake DNS
server: yourdomain.com (the seed's) is signed and publishes SPF and DMARC; example.com
is configured without DKIM and publishes nothing; dead.test's DNS never answers.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import RelayRunner, build_settings
from fakes.dns import DnsServer
from mailgate.delivery.dkim import generate_key

SEED_REQUEST = {
    "from": "hello@yourdomain.com",
    "to": "user@example.com",
    "subject": "Test email",
    "html": "<p>Content here</p>",
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayRunner]:
    tmp = tmp_path_factory.mktemp("analyze")
    pem, _txt = generate_key("ed25519")
    (tmp / "dkim.pem").write_bytes(pem)
    signed = {"dkim_selector": "s1", "dkim_key": str(tmp / "dkim.pem")}
    with DnsServer() as dns:
        dns.add("yourdomain.com", "TXT", "v=spf1 ip4:192.0.2.1 -all")
        dns.add("_dmarc.yourdomain.com", "TXT", "v=DMARC1; p=quarantine")
        dns.set_timeout("dead.test")
        dns.set_timeout("_dmarc.dead.test")
        settings = build_settings(
            tmp,
            domains=[
                {"name": "yourdomain.com", **signed},
                {"name": "example.com"},
                {"name": "dead.test", **signed},
            ],
            dns={"nameservers": [dns.nameserver]},
        )
        runner = RelayRunner(settings).start()
        runner.dns = dns  # type: ignore[attr-defined]
        try:
            yield runner
        finally:
            runner.stop()


@pytest.fixture(scope="module")
def api(relay: RelayRunner) -> Iterator[httpx.Client]:
    key = relay.create_key("analyzer")
    with httpx.Client(
        base_url=relay.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


def analyze(api: httpx.Client, body: object, **params: str) -> dict:  # type: ignore[type-arg]
    resp = api.post("/v1/messages/analyze", json=body, params=params)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert set(out) == {"data"}
    return out["data"]


def subtypes(data: dict) -> list[str]:  # type: ignore[type-arg]
    return [i["subtype"] for i in data["issues"]]


def test_seed_example(api: httpx.Client, relay: RelayRunner) -> None:
    data = analyze(api, SEED_REQUEST)
    assert data["issues"] == [
        {
            "type": "content",
            "subtype": "missing_text",
            "severity": "medium",
            "detail": "No plain text version",
            "penalty": 5,
        }
    ]
    assert data["can_send"] is True and data["grade"] == "good" and data["score"] == 95
    assert (data["issues_count"], data["critical_count"], data["high_count"]) == (1, 0, 0)
    assert (data["medium_count"], data["low_count"]) == (1, 0)
    assert data["recommendations"] == ["Consider adding a text version for better deliverability"]
    assert analyze(api, SEED_REQUEST) == data  # deterministic
    # Nothing was queued.
    assert relay.call(relay.store.list_messages(limit=10)) == []


def test_a_clean_message_is_excellent(api: httpx.Client) -> None:
    data = analyze(api, {**SEED_REQUEST, "text": "Content here"})
    assert data["issues"] == [] and data["grade"] == "excellent" and data["score"] == 100


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"subject": ""}, "missing_subject"),
        ({"html": None}, "missing_body"),
        ({"from": "hello@unknown.test"}, "domain_not_verified"),
        ({"to": "not an address"}, "invalid_to_address"),
        ({"headers": {"Subject": "x"}}, "invalid_header"),
        ({"template_id": "nope"}, "invalid_template"),
        ({"colour": "blue"}, "unknown_field"),
        ({"attachments": [{"filename": "a.txt", "content": "%%%"}]}, "invalid_attachment"),
    ],
)
def test_validation_errors_are_critical_issues(
    api: httpx.Client,
    change: dict,
    code: str,  # type: ignore[type-arg]
) -> None:
    body = {k: v for k, v in {**SEED_REQUEST, **change}.items() if v is not None}
    data = analyze(api, body)
    critical = [i for i in data["issues"] if i["severity"] == "critical"]
    assert [(i["type"], i["subtype"]) for i in critical] == [("validation", code)]
    assert data["can_send"] is False and data["grade"] == "poor"
    assert data["critical_count"] == 1 and data["score"] <= 50
    # send refuses the same request with the same code
    sent = api.post("/v1/messages/send", json=body)
    assert sent.status_code >= 400 and sent.json()["error"]["code"] == code


def test_content_is_judged_next_to_a_validation_error(api: httpx.Client) -> None:
    body = {**SEED_REQUEST, "subject": "", "html": "<p>Click here <script>x()</script></p>"}
    data = analyze(api, body)
    assert subtypes(data) == ["missing_subject", "script", "missing_text", "spam_phrases"]
    assert data["issues"][0]["detail"] == "subject: required"


def test_checks_end_to_end(api: httpx.Client) -> None:
    exe = base64.b64encode(b"MZ\x90\x00").decode()
    body = {
        **SEED_REQUEST,
        "subject": "FREE MONEY FOR YOU",
        "html": (
            "<div><p>Act now: <a href='https://bit.ly/x'>claim</a> or "
            "<a href='https://other.test/'>here</a><form><input></form>"
            "<img src='https://other.test/a.png'></div></span>"
        ),
        "to": [f"u{i}@example.net" for i in range(25)],
        "attachments": [{"filename": "claim.exe", "content": exe}],
    }
    data = analyze(api, body)
    assert set(subtypes(data)) == {
        "missing_text",
        "subject_all_caps",
        "spam_phrases",
        "image_text_ratio",
        "link_domain_mismatch",
        "url_shortener",
        "missing_unsubscribe",
        "broken_html",
        "form",
        "risky_attachment",
    }
    assert data["can_send"] is True and data["grade"] in ("fair", "poor")
    severities = [i["severity"] for i in data["issues"]]
    order = ["critical", "high", "medium", "low", "info"]
    assert severities == sorted(severities, key=order.index)  # worst first


def test_templates_are_rendered_before_the_checks(api: httpx.Client) -> None:
    resp = api.post(
        "/v1/templates",
        json={"id": "promo", "name": "promo", "subject": "{{ s }}", "html": "<p>{{ body }}</p>"},
    )
    assert resp.status_code == 201, resp.text
    data = analyze(
        api,
        {
            "from": "hello@yourdomain.com",
            "to": "user@example.com",
            "template_id": "promo",
            "template_data": {"s": "WINNER WINNER", "body": "See https://tinyurl.com/abc"},
            "text": "See https://tinyurl.com/abc",
        },
    )
    assert {"subject_all_caps", "url_shortener", "spam_phrases"} <= set(subtypes(data))


def test_gmail_clipping_over_102_kb(api: httpx.Client) -> None:
    html = "<p>" + "word " * 21_000 + "</p>"
    data = analyze(api, {**SEED_REQUEST, "html": html, "text": "word"})
    assert subtypes(data) == ["gmail_clipping"]


def test_dkim_spf_dmarc_of_the_from_domain(api: httpx.Client) -> None:
    data = analyze(api, {**SEED_REQUEST, "from": "hello@example.com", "text": "x y z"})
    assert subtypes(data) == ["missing_dkim", "missing_spf", "missing_dmarc"]
    assert [i["severity"] for i in data["issues"]] == ["high", "high", "medium"]
    skipped = analyze(
        api, {**SEED_REQUEST, "from": "hello@example.com", "text": "x y z"}, dns="false"
    )
    assert subtypes(skipped) == ["missing_dkim"]


def test_a_dns_failure_is_info_not_an_error(api: httpx.Client) -> None:
    started = time.monotonic()
    data = analyze(api, {**SEED_REQUEST, "from": "hello@dead.test", "text": "x y z"})
    assert time.monotonic() - started < 5
    assert [(i["subtype"], i["severity"], i["penalty"]) for i in data["issues"]] == [
        ("spf_unchecked", "info", 0),
        ("dmarc_unchecked", "info", 0),
    ]
    assert data["grade"] == "excellent" and data["info_count"] == 2
    started = time.monotonic()
    analyze(api, {**SEED_REQUEST, "from": "hello@dead.test", "text": "x y z"})
    assert time.monotonic() - started < 1  # the failure is cached for a while


def test_auth_and_bad_requests(api: httpx.Client, relay: RelayRunner) -> None:
    url = f"{relay.http_url}/v1/messages/analyze"
    assert httpx.post(url, json=SEED_REQUEST).status_code == 401
    reader = relay.create_key("reader", scope="read")
    resp = httpx.post(url, json=SEED_REQUEST, headers={"Authorization": f"Bearer {reader}"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    bad = api.post("/v1/messages/analyze", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    flag = api.post("/v1/messages/analyze", json=SEED_REQUEST, params={"dns": "maybe"})
    assert flag.status_code == 422 and flag.json()["error"]["field"] == "dns"
    shape = analyze(api, ["not", "an", "object"])
    assert subtypes(shape) == ["invalid_request"] and shape["can_send"] is False


def test_fast_without_dns(api: httpx.Client) -> None:
    body = {**SEED_REQUEST, "html": "<p>" + "Some text. " * 500 + "</p>", "text": "Some text."}
    times = []
    for _ in range(30):
        started = time.perf_counter()
        analyze(api, body, dns="false")
        times.append(time.perf_counter() - started)
    assert sorted(times)[len(times) // 2] < 0.05

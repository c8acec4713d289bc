"""Story: no request to a compatibility dialect makes the server answer 500.

Every route of MailSage, MailStack and MessagePipe gets property-based bodies (hypothesis):
arbitrary JSON values, each dialect's valid example with fields replaced, removed, nulled or
added at any depth, and raw bytes that are not JSON or not UTF-8. Whatever comes in, the
answer is JSON, below 500 (MessagePipe's documented "All providers failed" aside) and, when
it is an error, in that dialect's error shape. Null means absent and unknown fields are
ignored: a body with them is answered like the body without them. A body over
``[http] max_body_size`` is 413 in the dialect's shape.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RelayRunner, build_settings

MAX_BODY = 64 * 1024

MAILSAGE, MAILSTACK, MESSAGEPIPE = "mailsage", "mailstack", "messagepipe"
FIELDS = sorted(
    {
        *("template_id", "recipient", "email", "variables", "subject", "body", "smtp_id"),
        *("recipients", "campaign_id", "action", "from", "fromName", "to", "cc", "bcc"),
        *("replyTo", "html", "text", "templateId", "tags", "emails", "deliveryLogId"),
        *("deliveryLogIds", "projectId", "name"),
    }
)
INTERESTING = [
    "t1",
    "nope",
    "",
    " ",
    "user@example.com",
    "app@example.com",
    "a@b",
    "@",
    "a,b,,c",
    "x@example.com, y@example.org",
    '"Name" <n@example.com>',
    "x\r\nBcc: evil@example.net",
    "{{ 7*7 }}",
    "{{ name",
    "{% for x in y %}",
    "{{ ''.__class__ }}",
    "<p>hi</p>",
    "\x00",
    "\ufeff",
    "pause",
    "resume",
    "stop",
    "x" * 5000,
]

valid_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(INTERESTING),
)
# Lone surrogates, NaN and infinities too: values no JSON text holds, which the relay
# refuses as a whole (400 invalid_json), though Python's json module writes and reads them.
leaves = (
    valid_leaves
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=10)
    | st.sampled_from([math.nan, math.inf, -math.inf])
)


def nested(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


json_values = nested(leaves)
valid_json_values = nested(valid_leaves)  # what an unknown field may hold and be ignored


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every location in a JSON value, the root (``()``) first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw: st.DrawFn, example: dict[str, Any]) -> Any:
    """The example with 1-4 fields, at any depth, replaced, removed, nulled or added."""
    body = copy.deepcopy(example)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "remove", "null", "add"]))
        inner = [p for p in paths(body) if p]
        if op == "add" or not inner:
            dicts = [p for p in paths(body) if isinstance(at(body, p), dict)]
            if not dicts:
                continue
            where = at(body, draw(st.sampled_from(dicts)))
            where[draw(st.sampled_from(FIELDS) | st.text(max_size=10))] = draw(json_values)
            continue
        path = draw(st.sampled_from(inner))
        parent = at(body, path[:-1])
        if op == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = None if op == "null" else draw(json_values)
    return body


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a body: ASCII-escaped, or raw UTF-8 (lone surrogates: invalid UTF-8)."""
    value = draw(values)
    if draw(st.booleans()):
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


RAW = [
    b"",
    b"{",
    b"{nope",
    b"null",
    b"[]",
    b'"text"',
    b"\xff\xfe{}",
    b'\xef\xbb\xbf{"to": "a@example.com"}',
    b'{"to": "\xc3\x28"}',
    b'{"to": "a@example.com",}',
    b'{"a": 1, "a": 2}',
    b"1" * 5000,
    b"[" * 200 + b"]" * 200,
    b'{"deliveryLogIds": ["\\ud800"]}',
]
raw_bodies = st.sampled_from(RAW) | st.binary(max_size=200)


def bodies(example: dict[str, Any] | None) -> st.SearchStrategy[bytes]:
    options = [encoded(json_values), raw_bodies]
    if example is not None:
        options.append(encoded(mutated(example)))
    return st.one_of(*options)


def check_shape(dialect: str, path: str, response: httpx.Response) -> None:
    """Below 500 (but MessagePipe's "All providers failed"), JSON, errors in the dialect's shape."""
    where = (path, response.status_code, response.text[:500])
    body = response.json()
    status = response.status_code
    if dialect == MESSAGEPIPE and status == 500 and path in ("/email/send", "/email/send-bulk"):
        assert str(body.get("message", "")).startswith("All providers failed"), where
        return
    assert status < 500, where
    if status < 400:
        return
    if dialect in (MAILSAGE, MAILSTACK):
        assert set(body) == {"error", "code"}, where
        assert isinstance(body["error"], str) and body["error"], where
        assert isinstance(body["code"], str) and body["code"], where
    elif body != {"error": "Template not found", "statusCode": 404}:
        assert set(body) == {"message", "error", "statusCode"}, where
        assert body["statusCode"] == status and isinstance(body["message"], str), where


@pytest.fixture(scope="module")
def compat_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("compat_fuzz")
    runner = RelayRunner(
        build_settings(
            tmp,
            http={"max_body_size": "64KB"},
            delivery={"enabled": False},
            compat={"default_from": "app@example.com", "send_wait": "200ms"},
        )
    ).start()
    admin = runner.create_key("admin", scope="admin")
    created = httpx.post(
        f"{runner.http_url}/v1/templates",
        json={"id": "t1", "name": "t1", "subject": "Hello {{ name }}", "text": "Hi {{ name }}"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert created.status_code == 201, created.text
    key = runner.create_key("client")
    with httpx.Client(base_url=runner.http_url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        job = client.post("/api/v1/emails/batch", json=EXAMPLES["/api/v1/emails/batch"])
        assert job.status_code == 202, job.text
        email = client.post("/v1/emails", json=EXAMPLES["/v1/emails"])
        assert email.status_code == 202, email.text
        sent = client.post("/email/send", json=EXAMPLES["/email/send"])
        assert sent.status_code in (201, 202), sent.text
    yield {
        "relay": runner,
        "key": key,
        "job_id": job.json()["job_id"],
        "email_id": email.json()["id"],
        "log_id": sent.json()["deliveryLogId"],
    }
    runner.stop()


MAILSTACK_EMAIL = {
    "from": "app@example.com",
    "fromName": "App",
    "to": "user@example.com",
    "cc": ["cc@example.org"],
    "replyTo": "reply@example.com",
    "subject": "Welcome, {{ name }}",
    "html": "<p>Hi {{ name }}</p>",
    "text": "Hi {{ name }}",
    "variables": {"name": "Sam"},
    "tags": "welcome,onboarding",
}
EXAMPLES: dict[str, dict[str, Any]] = {
    "/api/v1/emails/send": {
        "template_id": "t1",
        "recipient": {"email": "user@example.com", "variables": {"name": "John"}},
        "subject": "Welcome {{ name }}",
        "body": "<p>Email content</p>",
    },
    "/api/v1/emails/batch": {
        "template_id": "t1",
        "recipients": [
            {"email": "a@example.com", "variables": {"name": "A"}},
            {"email": "b@example.org", "variables": {"name": "B"}},
        ],
        "subject": "Welcome",
        "campaign_id": "c1",
    },
    "/api/v1/emails/jobs/{id}/control": {"action": "pause"},
    "/v1/emails": MAILSTACK_EMAIL,
    "/v1/emails/batch": {"emails": [MAILSTACK_EMAIL, {**MAILSTACK_EMAIL, "templateId": "t1"}]},
    "/email/send": {
        "templateId": "t1",
        "to": "user@example.com",
        "subject": "Welcome",
        "variables": {"name": "John"},
        "projectId": "p1",
    },
    "/email/send-bulk": {
        "templateId": "t1",
        "recipients": ["a@example.com", "b@example.org"],
        "variables": {"name": "All"},
    },
    "/email/retry": {"deliveryLogId": "{log_id}"},
    "/email/retry-multiple": {"deliveryLogIds": ["{log_id}", "nope.0"]},
}
# (dialect, method, path, auth header)
ROUTES = [
    (MAILSAGE, "POST", "/api/v1/emails/send", "bearer"),
    (MAILSAGE, "POST", "/api/v1/emails/batch", "bearer"),
    (MAILSAGE, "GET", "/api/v1/emails/jobs/{id}", "bearer"),
    (MAILSAGE, "GET", "/api/v1/emails/jobs/{id}/status", "bearer"),
    (MAILSAGE, "POST", "/api/v1/emails/jobs/{id}/control", "bearer"),
    (MAILSTACK, "POST", "/v1/emails", "bearer"),
    (MAILSTACK, "POST", "/v1/emails/batch", "bearer"),
    (MAILSTACK, "GET", "/v1/emails/{id}", "bearer"),
    (MESSAGEPIPE, "POST", "/email/send", "x-api-key"),
    (MESSAGEPIPE, "POST", "/email/send-bulk", "x-api-key"),
    (MESSAGEPIPE, "POST", "/email/retry", "x-api-key"),
    (MESSAGEPIPE, "POST", "/email/retry-multiple", "x-api-key"),
    (MESSAGEPIPE, "GET", "/email/queue-stats", "x-api-key"),
]
POSTS = [route for route in ROUTES if route[1] == "POST"]


def headers_for(auth: str, key: str) -> dict[str, str]:
    if auth == "bearer":
        return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return {"x-api-key": key, "Content-Type": "application/json"}


def example_for(path: str, fx: dict[str, Any]) -> dict[str, Any] | None:
    example = EXAMPLES.get(path)
    if example is None:
        return None
    text = json.dumps(example).replace("{log_id}", fx["log_id"])
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def path_ids(real: str) -> st.SearchStrategy[str]:
    """A path parameter: the real id, or any text (percent-encoded so the route matches)."""
    text = st.text(min_size=1, max_size=40).filter(lambda s: s not in (".", "..") and "/" not in s)
    return st.sampled_from([real, real + ".0", "nope"]) | text


def url_for(path: str, ident: str) -> str:
    return path.replace("{id}", quote(ident, safe=""))


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.mark.parametrize(("dialect", "method", "path", "auth"), ROUTES, ids=lambda v: str(v))
def test_no_server_errors(
    compat_fuzz: dict[str, Any], dialect: str, method: str, path: str, auth: str
) -> None:
    relay: RelayRunner = compat_fuzz["relay"]
    real = compat_fuzz["email_id"] if dialect == MAILSTACK else compat_fuzz["job_id"]
    example = example_for(path, compat_fuzz)
    body_strategy = bodies(example) if method == "POST" else st.just(b"")
    query = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
    with httpx.Client(
        base_url=relay.http_url, headers=headers_for(auth, compat_fuzz["key"]), timeout=30
    ) as client:

        @given(ident=path_ids(real), body=body_strategy, params=query)
        @FUZZ
        def check(ident: str, body: bytes, params: dict[str, str]) -> None:
            url = url_for(path, ident)
            if method == "GET":
                response = client.get(url, params=params)
            else:
                response = client.post(url, content=body)
            check_shape(dialect, path, response)

        check()


@st.composite
def with_nulls_and_unknowns(draw: st.DrawFn, example: dict[str, Any]) -> dict[str, Any]:
    """The example with some of its keys set to null and unknown keys added at any depth."""
    body = copy.deepcopy(example)
    for _ in range(draw(st.integers(1, 4))):
        dicts = [p for p in paths(body) if isinstance(at(body, p), dict)]
        where = draw(st.sampled_from(dicts))
        container = at(body, where)
        if container and draw(st.booleans()):
            container[draw(st.sampled_from(sorted(container)))] = None
        elif not (where and where[-1] == "variables"):
            name = "x_" + draw(st.text(max_size=8))
            container[name] = draw(valid_json_values)
    return body


def cleaned(value: Any) -> Any:
    """What a dialect is to make of a body: null keys and unknown (``x_``) keys gone."""
    if isinstance(value, dict):
        return {k: cleaned(v) for k, v in value.items() if v is not None and not k.startswith("x_")}
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    return value


@pytest.mark.parametrize(("dialect", "method", "path", "auth"), POSTS, ids=lambda v: str(v))
def test_null_is_absent_and_unknown_fields_are_ignored(
    compat_fuzz: dict[str, Any], dialect: str, method: str, path: str, auth: str
) -> None:
    relay: RelayRunner = compat_fuzz["relay"]
    example = example_for(path, compat_fuzz)
    assert example is not None
    url = url_for(path, compat_fuzz["job_id"])
    with httpx.Client(
        base_url=relay.http_url, headers=headers_for(auth, compat_fuzz["key"]), timeout=30
    ) as client:

        @given(body=with_nulls_and_unknowns(example))
        @settings(FUZZ, max_examples=12)
        def check(body: dict[str, Any]) -> None:
            got = client.post(url, content=json.dumps(body))
            want = client.post(url, content=json.dumps(cleaned(body)))
            check_shape(dialect, path, got)
            assert got.status_code == want.status_code, (body, got.text, want.text)
            if got.status_code >= 400:
                assert got.json() == want.json(), (body, got.text, want.text)

        check()


@pytest.mark.parametrize(("dialect", "method", "path", "auth"), POSTS, ids=lambda v: str(v))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413_in_the_dialect_shape(
    compat_fuzz: dict[str, Any], dialect: str, method: str, path: str, auth: str, chunked: bool
) -> None:
    relay: RelayRunner = compat_fuzz["relay"]
    big = json.dumps({"subject": "x" * (MAX_BODY + 10)}).encode()
    content: Any = iter([big[i : i + 8192] for i in range(0, len(big), 8192)]) if chunked else big
    response = httpx.post(
        relay.http_url + url_for(path, compat_fuzz["job_id"]),
        content=content,
        headers=headers_for(auth, compat_fuzz["key"]),
        timeout=30,
    )
    assert response.status_code == 413, response.text[:300]
    check_shape(dialect, path, response)


DEEP = {
    "array-1000": b"[" * 1000 + b"]" * 1000,
    "object-600": b'{"a":' * 600 + b"1" + b"}" * 600,
    "variables-600": b'{"variables":' + b'{"a":' * 600 + b"1" + b"}" * 601,
}


@pytest.mark.parametrize(("dialect", "method", "path", "auth"), POSTS, ids=lambda v: str(v))
@pytest.mark.parametrize("deep", sorted(DEEP))
def test_deeply_nested_json_is_400_in_the_dialect_shape(
    compat_fuzz: dict[str, Any], dialect: str, method: str, path: str, auth: str, deep: str
) -> None:
    """Nesting well within the body size limit is a client's error, not a RecursionError."""
    relay: RelayRunner = compat_fuzz["relay"]
    response = httpx.post(
        relay.http_url + url_for(path, compat_fuzz["job_id"]),
        content=DEEP[deep],
        headers=headers_for(auth, compat_fuzz["key"]),
        timeout=30,
    )
    check_shape(dialect, path, response)
    assert response.status_code == 400, response.text[:300]


@pytest.mark.parametrize(("dialect", "method", "path", "auth"), ROUTES, ids=lambda v: str(v))
def test_another_method_and_an_unknown_path_answer_in_the_dialect_shape(
    compat_fuzz: dict[str, Any], dialect: str, method: str, path: str, auth: str
) -> None:
    """A client that reads its API's error shape gets it for Starlette's 405 and 404 too
    (they answered in the native shape: MailSage's ``error`` was an object)."""
    relay: RelayRunner = compat_fuzz["relay"]
    url = relay.http_url + url_for(path, compat_fuzz["job_id"])
    headers = headers_for(auth, compat_fuzz["key"])
    response = httpx.put(url, json={}, headers=headers, timeout=30)  # no route takes PUT
    assert response.status_code == 405 and response.headers["allow"], response.text
    check_shape(dialect, path, response)
    response = httpx.post(url + "/nope/x", json={}, headers=headers, timeout=30)
    assert response.status_code == 404, response.text
    check_shape(dialect, path, response)
    # A slash too many: a 404 too, not an empty redirect built from the Host header.
    response = httpx.request(method, url + "/", json={}, headers=headers, timeout=30)
    assert response.status_code == 404, (response.status_code, response.headers)
    check_shape(dialect, path, response)


def test_paths_outside_the_dialects_keep_the_native_shape(compat_fuzz: dict[str, Any]) -> None:
    relay: RelayRunner = compat_fuzz["relay"]
    for path in ("/v1/nope", "/emailx", "/api/v1/emailsx", "/v1/messages/", "/healthz/"):
        response = httpx.get(relay.http_url + path, timeout=30)
        assert response.status_code == 404, path
        expected = {"error": {"code": "not_found", "message": "Not Found", "field": None}}
        assert response.json() == expected, path

"""When the dashboard's session cookies carry Secure, with an https public_url: a browser
drops a Secure cookie set over plain http (every login failed as "form expired"), and a
cookie without it can be sent in clear. The peers other than loopback cannot connect in
the test's own sandbox, so the requests are made here (ASGI scopes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from mailgate.ui.web import UiContext


def request(host: str, client: str, scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": "/ui/login",
            "query_string": b"",
            "headers": [(b"host", host.encode())],
            "client": (client, 40000),
            "server": ("10.0.0.5", 8080),
        }
    )


def ui(public_url: str) -> UiContext:
    api = SimpleNamespace(settings=SimpleNamespace(http=SimpleNamespace(public_url=public_url)))
    return UiContext(api)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "client", "scheme", "secure"),
    [
        ("mail.example.com", "203.0.113.9", "http", True),  # through a proxy, public Host
        ("127.0.0.1:8080", "127.0.0.1", "http", True),  # a proxy on this host, its own Host
        ("10.0.0.5:8080", "192.0.2.7", "http", False),  # the operator at the node's address
        ("10.0.0.5:8080", "192.0.2.7", "https", True),
    ],
)
def test_secure_with_an_https_public_url(host: str, client: str, scheme: str, secure: bool) -> None:
    assert ui("https://mail.example.com").secure(request(host, client, scheme)) is secure


def test_never_secure_without_https() -> None:
    assert ui("http://mail.example.com").secure(request("mail.example.com", "127.0.0.1")) is False
    assert ui("").secure(request("10.0.0.5:8080", "192.0.2.7")) is False

"""Stories of the dashboard's login over plain http. An operator with an https
``public_url`` (a proxy ends TLS in front of the node) opens the dashboard at the node's
own address: see UiContext.secure. An ended session returns to its page after the
login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import RelayRunner, build_settings


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayRunner]:
    settings = build_settings(tmp_path, http={"public_url": "https://mail.example.test"})
    runner = RelayRunner(settings).start()
    yield runner
    runner.stop()


def _login_cookie(relay: RelayRunner, host: str | None = None) -> str:
    headers = {"Host": host} if host else {}
    answer = httpx.get(relay.http_url + "/ui/login", headers=headers, timeout=10)
    assert answer.status_code == 200
    return answer.headers["set-cookie"]


def test_secure_cookies_with_an_https_public_url(relay: RelayRunner) -> None:
    """Through a proxy (the public Host), or from this host: Secure. The operator at the
    node's LAN address gets none (tests/unit/test_ui_cookie_secure.py: no other peer
    than loopback can connect here)."""
    assert "secure" in _login_cookie(relay, "mail.example.test").lower()
    assert "secure" in _login_cookie(relay, "MAIL.example.test").lower()
    direct = _login_cookie(relay)
    assert "httponly" in direct.lower() and "secure" in direct.lower()


def test_the_login_returns_to_the_page_with_its_query(relay: RelayRunner) -> None:
    """An ended session sends the browser to the login, which then sends it back to the
    same list page, filters and all (it went back to the bare path)."""
    page = "/ui/messages?status=deferred&q=invoice"
    answer = httpx.get(relay.http_url + page, timeout=10)
    assert answer.status_code == 303
    login = answer.headers["location"]
    assert login.startswith("/ui/login?next=")
    form = httpx.get(relay.http_url + login, timeout=10).text
    assert 'name="next" value="/ui/messages?status=deferred&amp;q=invoice"' in form

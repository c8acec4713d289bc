"""Dashboard sessions, CSRF tokens, failed-login limits and the [ui] enabled default."""

from __future__ import annotations

from mailgate.ui.session import FailedLogins, Signer
from mailgate.ui.settings import UiSettings, ui_enabled


def test_a_session_opens_until_it_expires_and_not_when_forged() -> None:
    signer = Signer(b"k" * 32)
    session, cookie = signer.issue("key1", 60, now=1000.0)
    assert signer.open(cookie, now=1059.0) == session
    assert signer.open(cookie, now=1061.0) is None
    assert Signer(b"x" * 32).open(cookie, now=1001.0) is None
    body, _, mac = cookie.partition(".")
    assert signer.open(body[:-2] + "AA." + mac, now=1001.0) is None
    assert signer.open("garbage", now=1001.0) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    signer = Signer(b"k" * 32)
    token = signer.csrf("nonce-a")
    assert signer.csrf_ok("nonce-a", token)
    assert not signer.csrf_ok("nonce-b", token)
    assert not signer.csrf_ok("", signer.csrf(""))


def test_failed_logins_are_limited_per_client() -> None:
    limits = FailedLogins(burst=2, every=10.0)
    assert limits.wait("a", now=0.0) == 0
    limits.failed("a", now=0.0)
    limits.failed("a", now=0.0)
    assert limits.wait("a", now=0.0) == 10.0
    assert limits.wait("b", now=0.0) == 0
    assert limits.wait("a", now=10.0) == 0


def test_the_dashboard_is_on_by_default_only_on_loopback() -> None:
    default = UiSettings()
    assert ui_enabled(default, ["127.0.0.1:8080", "[::1]:8080", "localhost:80"])
    assert not ui_enabled(default, ["0.0.0.0:8080"])
    assert not ui_enabled(default, ["127.0.0.1:8080", "192.0.2.1:8080"])
    assert not ui_enabled(default, [])
    assert ui_enabled(UiSettings(enabled=True), ["0.0.0.0:8080"])
    assert not ui_enabled(UiSettings(enabled=False), ["127.0.0.1:8080"])
    assert UiSettings(session_ttl="1h").session_ttl == 3600.0

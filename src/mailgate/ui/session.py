"""Dashboard sessions: a signed cookie, its CSRF token, and the limit on failed logins.
A logout is kept on the server (store/ui.py end_session) until the session's expiry.

The cookie holds the admin key's id, an expiry and a random nonce, signed with HMAC-SHA256
under the relay-wide session key kept in the store (store/ui.py). The key id is checked
again on every request, so a revoked or downgraded key ends its sessions at once. The CSRF
token is derived from the nonce: a form from another site cannot know it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from mailgate.ratelimit import TokenBucket

COOKIE = "mailgate_ui"
PRE_COOKIE = "mailgate_ui_login"  # the login form's own CSRF nonce, before any session


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    expires: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def issue(self, key_id: str, ttl: float, now: float | None = None) -> tuple[Session, str]:
        now = time.time() if now is None else now
        session = Session(key_id, now + ttl, secrets.token_urlsafe(16))
        body = json.dumps({"k": key_id, "e": session.expires, "n": session.nonce}).encode()
        return session, f"{_b64(body)}.{_b64(self._mac('session', body))}"

    def open(self, cookie: str, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None when forged, malformed or expired."""
        now = time.time() if now is None else now
        body_text, _, mac_text = cookie.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(body)
            session = Session(str(data["k"]), float(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now else None

    def csrf(self, nonce: str) -> str:
        return _b64(self._mac("csrf", nonce.encode()))

    def csrf_ok(self, nonce: str, token: str) -> bool:
        return bool(nonce) and hmac.compare_digest(self.csrf(nonce).encode(), token.encode())


class FailedLogins:
    """Failed logins per client address: a burst of ``burst``, then one per ``every``
    seconds, like the API's per-key token buckets (ratelimit.py). Only failures count."""

    def __init__(self, burst: int = 10, every: float = 6.0) -> None:
        self._burst = float(burst)
        self._rate = 1.0 / every
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            bucket = self._buckets[client] = TokenBucket(self._rate, self._burst, self._burst, now)
        return bucket

    def wait(self, client: str, now: float | None = None) -> float:
        """Seconds before ``client`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(client, now)
        bucket.take(now, 0.0)  # refill only
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self._rate

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._bucket(client, now).take(now)

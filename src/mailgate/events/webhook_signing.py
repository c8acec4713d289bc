"""Standard Webhooks signatures (https://www.standardwebhooks.com): ``whsec_`` secrets and
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret that signs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
MIN_KEY, MAX_KEY = 24, 64  # bytes of key behind the prefix


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; ValueError saying what is wrong with it."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"a webhook secret starts with {PREFIX}")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {PREFIX} and base64") from None
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise ValueError(f"a webhook secret holds {MIN_KEY} to {MAX_KEY} bytes, not {len(key)}")
    return key


def signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: space-separated, one ``v1,`` entry per key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )

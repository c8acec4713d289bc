"""Tracking tokens: which message and recipient an open, click or unsubscribe is about.

A token is the message id, the recipient's index and an HMAC-SHA256 (truncated to 96 bits)
under the relay-wide key (the ``settings`` table, made once, shared by every node). The
kind (open, click, unsubscribe) is inside the MAC, so a token of one kind is worthless as
another, and a click token carries its target URL under the MAC too: the redirect goes only
where the signed token says (no open redirect), with no read of the message per click.

Open and unsubscribe tokens are lower-case base32hex (RFC 4648 section 7, 50 characters):
the unsubscribe one is also the local part of a mailto address (``unsubscribe+TOKEN@...``,
at most 64 octets), which mail systems may change the case of. That alphabet is Python's
``int(token, 32)``, which decodes one in about a microsecond where ``base64.b32decode``
(Python code) took tens on the busiest endpoint. Click tokens are base64url, shorter for the URL.
No recipient address appears in a token. Pure functions, no I/O: the delivery process
imports this module.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from hashlib import sha256

KEY_BYTES = 32
_MAC = 12  # bytes of HMAC-SHA256 kept: 2^96 online guesses to forge one
_IDX = 3  # recipient index: up to 16,777,215 recipients
_FIXED = 16 + _IDX + _MAC
_B32_LEN = 50  # base32 digits of _FIXED bytes (248 bits and 2 padding bits)
MAX_URL = 4096  # longer targets are left alone (not rewritten)

OPEN, CLICK, UNSUBSCRIBE = b"o", b"c", b"u"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True, slots=True)
class Target:
    """What a verified token names."""

    message_id: str
    rcpt_idx: int
    url: str = ""  # click tokens only


def _mac(key: bytes, kind: bytes, head: bytes, url: bytes) -> bytes:
    return hmac.new(key, kind + head + url, sha256).digest()[:_MAC]


def _head(message_id: str, rcpt_idx: int) -> bytes:
    return bytes.fromhex(message_id.replace("-", "")) + rcpt_idx.to_bytes(_IDX, "big")


def _message_id(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Signer:
    """Makes and checks tokens with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the tracking key is too short")
        self._key = key

    def open_token(self, message_id: str, rcpt_idx: int) -> str:
        return self._b32(OPEN, message_id, rcpt_idx)

    def unsubscribe_token(self, message_id: str, rcpt_idx: int) -> str:
        return self._b32(UNSUBSCRIBE, message_id, rcpt_idx)

    def click_token(self, message_id: str, rcpt_idx: int, url: str) -> str:
        head = _head(message_id, rcpt_idx)
        target = url.encode()
        raw = head + _mac(self._key, CLICK, head, target) + target
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _b32(self, kind: bytes, message_id: str, rcpt_idx: int) -> str:
        head = _head(message_id, rcpt_idx)
        raw = head + _mac(self._key, kind, head, b"")
        return base64.b32hexencode(raw).rstrip(b"=").decode().lower()

    def check_open(self, token: str) -> Target | None:
        return self._check_b32(OPEN, token)

    def check_unsubscribe(self, token: str) -> Target | None:
        return self._check_b32(UNSUBSCRIBE, token)

    def check_click(self, token: str) -> Target | None:
        """The click's message, recipient and URL; None if the token is not ours."""
        if not token.isascii() or len(token) > 2 * MAX_URL:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _FIXED:
            return None
        head, mac, url = raw[: 16 + _IDX], raw[16 + _IDX : _FIXED], raw[_FIXED:]
        if not hmac.compare_digest(mac, _mac(self._key, CLICK, head, url)):
            return None
        try:
            target = url.decode()
        except UnicodeDecodeError:
            return None
        return Target(_message_id(head[:16]), int.from_bytes(head[16:], "big"), target)

    def _check_b32(self, kind: bytes, token: str) -> Target | None:
        # isalnum: no sign, space or "_", which int() would take.
        if len(token) != _B32_LEN or not token.isascii() or not token.isalnum():
            return None
        try:
            value = int(token, 32)
        except ValueError:  # w-z
            return None
        if value & 3:  # the 2 padding bits of the last digit are 0 in a token we made
            return None
        raw = (value >> 2).to_bytes(_FIXED, "big")
        head, mac = raw[: 16 + _IDX], raw[16 + _IDX :]
        if not hmac.compare_digest(mac, _mac(self._key, kind, head, b"")):
            return None
        return Target(_message_id(head[:16]), int.from_bytes(head[16:], "big"))

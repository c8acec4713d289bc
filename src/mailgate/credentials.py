"""API keys: creation, hashing, and checking a presented key.

A key is ``mg_<id>_<secret>``; only its SHA-256 is stored. Keys are long random strings,
so a fast hash is enough (no password-stretching needed) and checking stays cheap on the
event loop. The comparison is constant-time, and a missing key costs the same as a
wrong one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

from mailgate import policy
from mailgate.address_syntax import ace
from mailgate.models import Credential
from mailgate.quota import parse_quota
from mailgate.store import KeyRecord, Store
from mailgate.units import parse_rate

SCOPES = ("send", "read", "admin")
_KEY_RE = re.compile(r"^mg_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}$")
_DUMMY_HASH = hashlib.sha256(b"mailgate-no-such-key").hexdigest()
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name) or name.lower() == "apikey":
        raise ValueError(
            "key name must be 1-128 characters of letters, digits, '.', '_', '@' or '-' "
            "and not 'apikey'"
        )
    return name


def validate_default_from(value: str) -> str:
    """A key's default sender: a bare address (the domain policy applies when it is used)."""
    value = value.strip()
    if value and (policy.split_address(value) is None or any(c in value for c in "<> \t")):
        raise ValueError(f"default-from {value!r} is not an email address (give a bare address)")
    return value


def sender_domains(given: Iterable[str], configured: frozenset[str]) -> tuple[list[str], list[str]]:
    """A key's sender domains in the form [[domains]] keeps them (lower case, A-labels: an
    internationalised name may be given either way), and those not configured."""
    domains = [ace(d.strip().lower()) for d in given]
    return domains, [d for d in domains if d not in configured]


def key_limits(rate: str, quota: str, domains: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
    """A key's rate, quota and sender domains as stored (checked: ValueError naming the
    bad one): "" for no rate of its own or no quota, domains lower-cased and sorted."""
    rate = rate.strip()
    if rate:
        parse_rate(rate)
    quota = quota.strip()
    if quota:
        parsed = parse_quota(quota)
        quota = f"{parsed.limit}/{'d' if parsed.unit == 'day' else 'month'}"
    return rate, quota, tuple(sorted({d.strip().lower() for d in domains if d.strip()}))


async def create_key(
    store: Store,
    name: str,
    scope: str = "send",
    domains: Iterable[str] = (),
    rate: str = "",
    *,
    default_from: str = "",
    quota: str = "",
) -> str:
    """Store a new key and return it: the only time the full key is seen.

    ``default_from``: the sender of API requests that name none (after a template's);
    ``quota``: accepted recipients per calendar period, "10000/month" or "500/d".
    """
    validate_name(name)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    rate, quota, _ = key_limits(rate, quota, ())
    default_from = validate_default_from(default_from)
    key_id = secrets.token_hex(6)
    key = f"mg_{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        name=name,
        key_hash=hash_key(key),
        scope=scope,
        domains=tuple(sorted({d.strip().lower() for d in domains if d.strip()})),
        created_at=time.time(),
        revoked_at=None,
        rate=rate,
        default_from=default_from,
        quota=quota,
    )
    await store.keys.add(record)
    return key


async def authenticate(store: Store, login: str, password: str) -> Credential | None:
    """Check a key presented as SMTP AUTH (login 'apikey' or the key's name) or HTTP bearer."""
    record: KeyRecord | None = None
    if login.lower() in ("apikey", ""):
        m = _KEY_RE.match(password)
        if m:
            record = await store.keys.get(m.group(1))
    elif _NAME_RE.match(login):
        record = await store.keys.by_name(login)
    expected = record.key_hash if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hash_key(password), expected)
    if record is None or not matches or not record.active:
        return None
    store.keys.note_used(record.id, time.time())
    return Credential(
        kind="key",
        id=record.id,
        name=record.name,
        domains=record.domains or None,
        scope=record.scope,
        rate=record.rate,
        default_from=record.default_from,
        quota=record.quota,
    )

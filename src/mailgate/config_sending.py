"""The sections of relay.toml about mail going out: sender domains and their DKIM keys,
providers, routes, DNS, bounces, retries, the delivery loop and tracking.

config.py puts them together with the relay's own sections (config_service.py) as Settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mailgate.address_syntax import ace
from mailgate.config_types import (
    ConfigPath,
    Duration,
    ReadableFile,
    Section,
    StrList,
    at_runtime,
    check_rate,
    runtime_readable,
    runtime_writable_dir,
)
from mailgate.units import parse_hostport

_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def check_dns_labels(value: str) -> str:
    """A DKIM selector (or a domain) is a dot-separated sequence of DNS labels (RFC 6376 3.1),
    because it becomes part of the DNS name ``<selector>._domainkey.<domain>``."""
    value = value.strip()
    labels = value.split(".")
    if not value or not all(
        0 < len(label) <= 63 and set(label) <= _LDH and "-" not in (label[0], label[-1])
        for label in labels
    ):
        raise ValueError(
            f"{value!r} is not a DNS name (labels of letters, digits and inner hyphens "
            'separated by dots, e.g. "mail" or "s2025.eu")'
        )
    return value


class DkimKeySettings(Section):
    """One entry of ``dkim_keys``: a selector and its private key file (checked by the domain)."""

    selector: str
    key: ConfigPath


class DomainSettings(Section):
    """A sender domain. DKIM: ``dkim_selector`` + ``dkim_key``, and/or a ``dkim_keys`` list
    of ``{selector, key}`` tables, so one domain can sign with RSA and Ed25519 at once."""

    name: str
    dkim_selector: str = ""
    dkim_key: ReadableFile | None = None
    dkim_keys: list[DkimKeySettings] = []

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or "@" in value or " " in value:
            raise ValueError("must be a domain name such as example.com")
        return ace(value)  # an internationalised name in its A-label form

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return check_dns_labels(value) if value.strip() else ""

    @field_validator("dkim_keys")
    @classmethod
    def _keys(cls, values: list[DkimKeySettings], info: ValidationInfo) -> list[DkimKeySettings]:
        # Checked here rather than in DkimKeySettings so that errors count entries from #1.
        checked = []
        for number, entry in enumerate(values, 1):
            try:
                selector = check_dns_labels(entry.selector)
                runtime_readable(entry.key, info)
            except ValueError as exc:
                where = f'entry #{number} (selector = "{entry.selector}")'
                raise ValueError(f"{where}: {exc}") from None
            checked.append(entry.model_copy(update={"selector": selector}))
        return checked

    @model_validator(mode="after")
    def _dkim_pairs(self) -> DomainSettings:
        if bool(self.dkim_selector) != (self.dkim_key is not None):
            raise ValueError("dkim_selector and dkim_key must be set together")
        seen: set[str] = set()
        for selector, _key in self.dkim_pairs():
            if selector.lower() in seen:
                raise ValueError(f'selector "{selector}" is given twice (one key per selector)')
            seen.add(selector.lower())
        return self

    def dkim_pairs(self) -> list[tuple[str, Path]]:
        """Every (selector, key file) of this domain: the single pair first, then dkim_keys."""
        pairs = [(self.dkim_selector, self.dkim_key)] if self.dkim_key is not None else []
        return pairs + [(entry.selector, entry.key) for entry in self.dkim_keys]


MX_MAX_CONNECTIONS = 100  # [[providers]] kind = "mx": max_connections by default


class ProviderSettings(Section):
    name: str
    kind: Literal["smtp", "maildir", "mx"]
    priority: int = 10
    weight: int = Field(default=1, ge=0)
    host: str = ""
    port: int = Field(default=0, ge=0, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    tls_verify: bool = True
    ca_file: ReadableFile | None = None  # trust this CA bundle instead of the system's
    username: str = ""
    password: str = ""
    password_env: str = ""
    max_connections: int = Field(default=10, ge=1, le=1000)  # kind = "mx": 100
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 300.0
    data_timeout: Duration = 600.0
    idle_timeout: Duration = Field(default=30.0, gt=0)
    # BDAT (RFC 3030) instead of DATA where the server offers CHUNKING: one round trip a
    # message instead of two. Off for a server whose CHUNKING is broken.
    chunking: bool = True
    path: ConfigPath | None = None
    # Circuit breaker: after this many consecutive failures the provider is skipped for
    # breaker_cooldown, then one delivery probes it (not used for kind = "mx").
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown: Duration = 30.0
    rate: str = ""  # most messages per unit of time the provider accepts, e.g. "14/s"
    # kind = "mx": opportunistic STARTTLS, or require TLS with a verified certificate.
    tls_policy: Literal["opportunistic", "require"] = "opportunistic"
    max_connections_per_domain: int = Field(default=5, ge=1, le=1000)

    _rate = field_validator("rate")(check_rate)

    @model_validator(mode="before")
    @classmethod
    def _mx_connections(cls, data: Any) -> Any:
        """kind = "mx": max_connections is across every destination; ten MX hosts that
        never answered held all ten of a smarthost's default, and mail to every other
        domain waited (Postfix's default_process_limit is 100; max_connections_per_domain
        caps each destination)."""
        if isinstance(data, dict) and data.get("kind") == "mx":
            data = {"max_connections": MX_MAX_CONNECTIONS, **data}
        return data

    @model_validator(mode="after")
    def _kind_keys(self, info: ValidationInfo) -> ProviderSettings:
        if self.kind == "smtp" and not self.host:
            raise ValueError("an smtp provider needs host")
        if self.kind == "maildir" and self.path is None:
            raise ValueError("a maildir provider needs path")
        if self.kind == "maildir" and self.path is not None:
            # A file there deferred every delivery ("Not a directory") for max_age.
            runtime_writable_dir(self.path, info)
        if self.kind == "mx" and (self.host or self.username):
            raise ValueError("an mx provider finds hosts in DNS: no host or username")
        if self.password and self.password_env:
            raise ValueError("set password or password_env, not both")
        if self.password_env and at_runtime(info) and not os.environ.get(self.password_env):
            # It logged in with an empty password, refused at every attempt.
            raise ValueError(
                f"password_env: the environment variable {self.password_env} is not set"
            )
        return self

    def resolved_port(self) -> int:
        if self.port:
            return self.port
        if self.kind == "mx":
            return 25
        return 465 if self.tls == "implicit" else 587

    def resolved_password(self) -> str:
        if self.password_env:
            return os.environ.get(self.password_env, "")
        return self.password


class RouteSettings(Section):
    """Send mail for given recipient (or sender) domains through given providers."""

    name: str = ""
    recipient_domains: StrList = []
    sender_domains: StrList = []
    providers: StrList
    tls_policy: Literal["opportunistic", "require"] | None = None  # for mx providers

    @field_validator("recipient_domains", "sender_domains")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower().rstrip(".") for v in values]

    @model_validator(mode="after")
    def _matches(self) -> RouteSettings:
        if not self.recipient_domains and not self.sender_domains:
            raise ValueError("a route needs recipient_domains or sender_domains")
        if not self.providers:
            raise ValueError("a route needs providers")
        return self

    def matches(self, recipient_domain: str, sender_domain: str) -> bool:
        return _domain_in(recipient_domain, self.recipient_domains) or _domain_in(
            sender_domain, self.sender_domains
        )


def _domain_in(domain: str, patterns: list[str]) -> bool:
    """'example.com' matches itself; '*.example.com' matches its subdomains."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if domain.endswith(pattern[1:]):
                return True
        elif domain == pattern:
            return True
    return False


class DnsSettings(Section):
    nameservers: StrList = []  # host, host:port or [v6]:port; empty: /etc/resolv.conf
    timeout: Duration = 5.0
    lifetime: Duration = 10.0

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for value in values:
            host, _ = parse_hostport(value, default_port=53)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                # The resolver takes addresses only: a name stopped the delivery process.
                raise ValueError(f"{value!r}: a nameserver is an IP address") from None
        return values


class BounceSettings(Section):
    """VERP return paths, and the asynchronous bounces the SMTP listener takes back."""

    verp: bool = False  # per-recipient return path: bounces+<id>.<n>@domain
    domain: str = ""  # default: [server] hostname
    local: str = "bounces"
    # Where feedback loops send complaints (ARF reports), e.g. "fbl@example.com"; "" = none.
    complaints_address: str = ""

    @field_validator("local")
    @classmethod
    def _local(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", value):
            raise ValueError("letters, digits, '.', '_' or '-' (at most 40)")
        return value

    @field_validator("complaints_address")
    @classmethod
    def _complaints(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.-]{1,253}", value):
            raise ValueError("an address such as fbl@example.com, or empty")
        return value.lower()


class TrackingSettings(Section):
    """Defaults for a message's ``tracking`` options (the API's per-message field wins)."""

    opens: bool = False  # an open pixel in html parts
    clicks: bool = False  # links of html and text parts redirect through [http] public_url
    # List-Unsubscribe (RFC 8058 one-click) on every message, not only tracked or batch mail.
    unsubscribe: bool = False


class RetrySettings(Section):
    min_backoff: Duration = 300.0
    max_backoff: Duration = 4 * 3600.0
    max_age: Duration = Field(default=5 * 86400.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not exceed max_backoff")
        return self


class DeliverySettings(Section):
    enabled: bool = True
    concurrency: int = Field(default=200, ge=1, le=10000)
    claim_batch: int = Field(default=200, ge=1, le=5000)
    lease: Duration = Field(default=900.0, gt=0)
    shutdown_grace: Duration = 20.0

"""relay.toml -> frozen, validated settings.

Every error names the file and the key (``relay.toml: [smtp] max_message_size: ...``) so an
operator can fix it without reading the source. ``MAILGATE_<SECTION>_<KEY>`` environment
variables override single values of the table sections.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailgate.config_types import Duration, Size, StrList
from mailgate.config_types import Section as _Section
from mailgate.events.webhook_settings import WebhookSettings
from mailgate.exceptions import ConfigError
from mailgate.inflight import default_cap
from mailgate.ui.settings import UiSettings
from mailgate.units import parse_hostport, parse_rate, parse_size


def _check_rate(value: str) -> str:
    if value:
        parse_rate(value)
    return value


def _check_listen(values: list[str]) -> list[str]:
    for value in values:
        parse_hostport(value)
    return values


def _readable_file(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"cannot read file {str(value)!r}")
    if value is not None and not value.is_file():
        raise ValueError(f"{str(value)!r} is not a file")
    return value


class ServerSettings(_Section):
    hostname: str = Field(default_factory=socket.getfqdn)
    data_dir: Path = Path("./data")
    node_id: str = Field(default_factory=socket.gethostname)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (logs.py)
    # Message bytes held in memory across all SMTP sessions and HTTP requests; over it
    # clients get 452 4.3.1 / HTTP 503 and retry (mailgate.inflight).
    max_inflight_bytes: Size = Field(default_factory=default_cap, gt=0)
    # Free space kept on data_dir's file system: below it new mail is refused (452 4.3.1,
    # HTTP 507) so the queue can still drain. None: see Settings.min_free_space.
    min_free_space: Size | None = None


class DatabaseSettings(_Section):
    url: str = ""  # empty: sqlite under data_dir

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        if value.startswith("sqlite:///") and value[len("sqlite:///") :] in ("", ":memory:"):
            # An in-memory queue is not durable, and each connection would see its own.
            raise ValueError("SQLite needs a file path (sqlite:///path/to/mailgate.db)")
        return value


class SmtpSettings(_Section):
    listen: StrList = ["0.0.0.0:587"]
    implicit_tls_listen: StrList = []
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_auth: bool = True
    trusted_networks: StrList = ["127.0.0.0/8", "::1/128"]
    max_message_size: Size = parse_size("25MB")
    max_recipients: int = Field(default=100, ge=1, le=100000)
    max_received_headers: int = Field(default=50, ge=1)
    idle_timeout: Duration = 300.0
    auth_failure_delay: Duration = 1.0
    # AUTH without TLS from loopback clients. Set false when a proxy on this host
    # forwards remote clients (their connections then come from loopback too).
    auth_plaintext_loopback: bool = True
    # Open connections, in all and from one client address (trusted_networks exempt):
    # beyond them a new connection gets 421 4.7.0 and is closed.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_client: int = Field(default=50, ge=1)

    _listen = field_validator("listen", "implicit_tls_listen")(_check_listen)

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a network (use e.g. 10.0.0.0/8)") from exc
        return values

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.implicit_tls_listen and self.tls_cert is None:
            raise ValueError("implicit_tls_listen needs tls_cert and tls_key")
        return self

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_networks]


class HttpSettings(_Section):
    listen: StrList = ["127.0.0.1:8080"]  # [] disables the HTTP API
    public_url: str = ""  # how clients reach the API (for links and the OpenAPI servers list)
    max_body_size: Size = parse_size("50MB")
    rate: str = ""  # default per-key request rate, e.g. "100/s"; "" = unlimited

    _listen = field_validator("listen")(_check_listen)

    _rate = field_validator("rate")(_check_rate)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("an http:// or https:// URL with no query or fragment")
        return value.rstrip("/")


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


class DkimKeySettings(_Section):
    """One entry of ``dkim_keys``: a selector and its private key file (checked by the domain)."""

    selector: str
    key: Path


class DomainSettings(_Section):
    """A sender domain. DKIM: ``dkim_selector`` + ``dkim_key``, and/or a ``dkim_keys`` list
    of ``{selector, key}`` tables, so one domain can sign with RSA and Ed25519 at once."""

    name: str
    dkim_selector: str = ""
    dkim_key: Path | None = None
    dkim_keys: list[DkimKeySettings] = []

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or "@" in value or " " in value:
            raise ValueError("must be a domain name such as example.com")
        return value

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return check_dns_labels(value) if value.strip() else ""

    @field_validator("dkim_key")
    @classmethod
    def _key(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @field_validator("dkim_keys")
    @classmethod
    def _keys(cls, values: list[DkimKeySettings]) -> list[DkimKeySettings]:
        # Checked here rather than in DkimKeySettings so that errors count entries from #1.
        checked = []
        for number, entry in enumerate(values, 1):
            try:
                selector = check_dns_labels(entry.selector)
                _readable_file(entry.key)
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


class ProviderSettings(_Section):
    name: str
    kind: Literal["smtp", "maildir", "mx"]
    priority: int = 10
    weight: int = Field(default=1, ge=0)
    host: str = ""
    port: int = Field(default=0, ge=0, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    tls_verify: bool = True
    ca_file: Path | None = None  # trust this CA bundle instead of the system's
    username: str = ""
    password: str = ""
    password_env: str = ""
    max_connections: int = Field(default=10, ge=1, le=1000)
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 300.0
    data_timeout: Duration = 600.0
    idle_timeout: Duration = 30.0
    path: Path | None = None
    # Circuit breaker: after this many consecutive failures the provider is skipped for
    # breaker_cooldown, then one delivery probes it (not used for kind = "mx").
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown: Duration = 30.0
    rate: str = ""  # most messages per unit of time the provider accepts, e.g. "14/s"
    # kind = "mx": opportunistic STARTTLS, or require TLS with a verified certificate.
    tls_policy: Literal["opportunistic", "require"] = "opportunistic"
    max_connections_per_domain: int = Field(default=5, ge=1, le=1000)

    _ca_file = field_validator("ca_file")(lambda v: _readable_file(v))

    _rate = field_validator("rate")(_check_rate)

    @model_validator(mode="after")
    def _kind_keys(self) -> ProviderSettings:
        if self.kind == "smtp" and not self.host:
            raise ValueError("an smtp provider needs host")
        if self.kind == "maildir" and self.path is None:
            raise ValueError("a maildir provider needs path")
        if self.kind == "mx" and (self.host or self.username):
            raise ValueError("an mx provider finds hosts in DNS: no host or username")
        if self.password and self.password_env:
            raise ValueError("set password or password_env, not both")
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


class RouteSettings(_Section):
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


class DnsSettings(_Section):
    nameservers: StrList = []  # host, host:port or [v6]:port; empty: /etc/resolv.conf
    timeout: Duration = 5.0
    lifetime: Duration = 10.0

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_hostport(value, default_port=53)
        return values


class BounceSettings(_Section):
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


class TrackingSettings(_Section):
    """Defaults for a message's ``tracking`` options (the API's per-message field wins)."""

    opens: bool = False  # an open pixel in html parts
    clicks: bool = False  # links of html and text parts redirect through [http] public_url
    # List-Unsubscribe (RFC 8058 one-click) on every message, not only tracked or batch mail.
    unsubscribe: bool = False


class RetrySettings(_Section):
    min_backoff: Duration = 300.0
    max_backoff: Duration = 4 * 3600.0
    max_age: Duration = 5 * 86400.0
    jitter: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not exceed max_backoff")
        return self


class RetentionSettings(_Section):
    """How long what the relay has finished with is kept (docs/operations.md)."""

    # After a message's last delivery reached a final state: its body is emptied.
    bodies: Duration = 7 * 86400.0
    # After the same moment (or a webhook's last attempt, a job's end): rows are deleted.
    records: Duration = 90 * 86400.0

    @model_validator(mode="after")
    def _order(self) -> RetentionSettings:
        if self.bodies > self.records:
            raise ValueError("bodies must not exceed records (a deleted message has no body)")
        return self


class DeliverySettings(_Section):
    enabled: bool = True
    concurrency: int = Field(default=200, ge=1, le=10000)
    claim_batch: int = Field(default=200, ge=1, le=5000)
    lease: Duration = 900.0
    shutdown_grace: Duration = 20.0


DIALECTS = ("mailsage", "mailstack", "messagepipe")


class CompatSettings(_Section):
    """The compatibility routes for clients of other hosted APIs (README, "Compatibility")."""

    enabled: StrList = list(DIALECTS)
    # The sender of requests that carry none, after the template's and the key's.
    default_from: str = ""
    # How long MessagePipe's /email/send waits for the first delivery attempt.
    send_wait: Duration = Field(default=10.0, ge=0, le=120)

    @field_validator("enabled")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DIALECTS))
        if unknown:
            raise ValueError(
                f"unknown dialect(s) {', '.join(unknown)}; known: {', '.join(DIALECTS)}"
            )
        return value


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    http: HttpSettings = HttpSettings()
    domains: list[DomainSettings] = []
    providers: list[ProviderSettings] = []
    routes: list[RouteSettings] = []
    dns: DnsSettings = DnsSettings()
    bounces: BounceSettings = BounceSettings()
    retry: RetrySettings = RetrySettings()
    delivery: DeliverySettings = DeliverySettings()
    compat: CompatSettings = CompatSettings()
    webhooks: WebhookSettings = WebhookSettings()
    tracking: TrackingSettings = TrackingSettings()
    ui: UiSettings = UiSettings()
    retention: RetentionSettings = RetentionSettings()

    source: str = "relay.toml"

    @model_validator(mode="after")
    def _names(self) -> Settings:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError("provider names must be unique")
        if self.delivery.enabled and not self.providers:
            raise ValueError('no [[providers]]: add one (kind = "maildir" for development)')
        for i, route in enumerate(self.routes):
            unknown = [p for p in route.providers if p not in names]
            if unknown:
                raise ValueError(f"[[routes]] #{i + 1}: unknown provider(s) {', '.join(unknown)}")
        t = self.tracking
        on = [k for k in ("opens", "clicks", "unsubscribe") if getattr(t, k)]
        if on and not self.http.public_url:
            raise ValueError(
                f"[http] public_url is required when [tracking] {' and '.join(on)} is on "
                "(tracking links point there)"
            )
        return self

    @model_validator(mode="after")
    def _inflight_fits_a_message(self) -> Settings:
        cap, biggest = self.server.max_inflight_bytes, self.smtp.max_message_size
        if "max_inflight_bytes" in self.server.model_fields_set and cap < biggest:
            raise ValueError(
                f"[server] max_inflight_bytes ({cap} bytes) is smaller than [smtp] "
                f"max_message_size ({biggest} bytes): a message that big could never be "
                "accepted (its clients would be told to retry for ever)"
            )
        return self

    @property
    def max_inflight_bytes(self) -> int:
        """[server] max_inflight_bytes; its default (from the machine's memory) is never
        below one message of [smtp] max_message_size."""
        if "max_inflight_bytes" in self.server.model_fields_set:
            return self.server.max_inflight_bytes
        return max(self.server.max_inflight_bytes, self.smtp.max_message_size)

    @property
    def min_free_space(self) -> int:
        """[server] min_free_space, by default the larger of 256 MB and four of the
        largest messages (a few accepts in flight when the check last passed)."""
        if self.server.min_free_space is not None:
            return self.server.min_free_space
        return max(256 * 1000**2, 4 * self.smtp.max_message_size)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL (async driver) of the queue database."""
        url = self.database.url or f"sqlite:///{(self.server.data_dir / 'mailgate.db')}"
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        return "postgresql+asyncpg://" + url[len("postgresql://") :]

    def domain_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.domains)

    @property
    def bounce_domain(self) -> str:
        return (self.bounces.domain or self.server.hostname).lower()


_TABLE_SECTIONS = (
    "server",
    "database",
    "smtp",
    "http",
    "dns",
    "bounces",
    "retry",
    "delivery",
    "compat",
    "webhooks",
    "tracking",
    "ui",
)


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    for name, value in environ.items():
        if not name.startswith("MAILGATE_"):
            continue
        rest = name[len("MAILGATE_") :].lower()
        for section in _TABLE_SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                target = data.setdefault(section, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"{source}: {name}: [{section}] is not a table in the file")
                target[key] = value
                break


def _describe(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """('providers', 0, 'port') -> '[[providers]] #1 (name="up") port'."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "list[")))]
    if not parts:
        return "(top level)"
    head, *rest = parts
    if head == "webhooks" and len(rest) > 1 and rest[0] == "endpoints" and isinstance(rest[1], int):
        keys = ".".join(str(p) for p in rest[2:])
        return f"[[webhooks.endpoints]] #{rest[1] + 1}" + (f" {keys}" if keys else "")
    if head in ("providers", "domains", "routes") and rest and isinstance(rest[0], int):
        idx = rest[0]
        try:
            label = data[head][idx].get("name", "")
        except (KeyError, IndexError, AttributeError, TypeError):
            label = ""
        named = f' (name = "{label}")' if label else ""
        keys = ".".join(str(p) for p in rest[1:])
        return f"[[{head}]] #{idx + 1}{named}" + (f" {keys}" if keys else "")
    if rest:
        return f"[{head}] " + ".".join(str(p) for p in rest)
    return f"[{head}]" if head in _TABLE_SECTIONS else str(head)


def load_settings(
    path: str | Path | None = None,
    *,
    data: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, override and validate relay.toml; raise ConfigError naming file and key."""
    source = str(path) if path is not None else "<config>"
    if data is None:
        if path is None:
            raise ConfigError("no configuration file given")
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    _env_overrides(data, os.environ if environ is None else environ, source)
    if "source" in data:
        raise ConfigError(f"{source}: source: unknown key")
    try:
        return Settings.model_validate({**data, "source": source})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _describe(tuple(first["loc"]), data)
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {where}: {msg}{suffix}") from None

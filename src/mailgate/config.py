"""relay.toml -> frozen, validated settings.

Every error names the file and the key (``relay.toml: [smtp] max_message_size: ...``) so an
operator can fix it without reading the source. ``MAILGATE_<SECTION>_<KEY>`` environment
variables override single values of the table sections.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from mailgate.ballast import default_size
from mailgate.config_sending import (
    BounceSettings,
    DeliverySettings,
    DnsSettings,
    DomainSettings,
    ProviderSettings,
    RetrySettings,
    RouteSettings,
    TrackingSettings,
)
from mailgate.config_service import (
    CompatSettings,
    DatabaseSettings,
    HttpSettings,
    RetentionSettings,
    ServerSettings,
    SmtpSettings,
)
from mailgate.config_types import Section
from mailgate.events.webhook_settings import WebhookSettings
from mailgate.exceptions import ConfigError
from mailgate.ui.settings import UiSettings


class Settings(Section):
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
    def ballast_size(self) -> int:
        """[server] ballast_size, by default a quarter of min_free_space within 16-64 MiB."""
        if self.server.ballast_size is not None:
            return self.server.ballast_size
        return default_size(self.min_free_space)

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
        """The sending domains' names, made once per list of domains (every API send checks
        its sender): not cached on the object, which model_copy would copy along with a
        changed list (reload.py)."""
        global _domain_names
        domains = self.domains
        if _domain_names[0] is not domains:
            _domain_names = (domains, frozenset(d.name for d in domains))
        return _domain_names[1]

    @property
    def bounce_domain(self) -> str:
        return (self.bounces.domain or self.server.hostname).lower()


# The last list of domains asked for by domain_names(), and their names (held, so the
# list cannot be freed and another take its identity).
_domain_names: tuple[list[DomainSettings] | None, frozenset[str]] = (None, frozenset())

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


def _env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], source: str
) -> dict[tuple[str, str], str]:
    """Put the MAILGATE_<SECTION>_<KEY> variables into ``data``; which variable set what."""
    given: dict[tuple[str, str], str] = {}
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
                given[(section, key)] = name
                break
    return given


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
    runtime: bool = False,
) -> Settings:
    """Read, override and validate relay.toml; raise ConfigError naming file and key.
    ``runtime``: to run with (serve, reload, check-config): also check what depends on
    this user and environment (config_types.at_runtime)."""
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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    from_env = _env_overrides(data, os.environ if environ is None else environ, source)
    if "source" in data:
        raise ConfigError(f"{source}: source: unknown key")
    try:
        base = Path(path).absolute().parent if path is not None else None
        data.setdefault("server", {})  # validated, so its default data_dir is from base
        return Settings.model_validate(
            {**data, "source": source}, context={"base": base, "runtime": runtime}
        )
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
        # A value from the environment is the variable's mistake, not the file's.
        loc = tuple(first["loc"])
        origin = from_env.get((str(loc[0]), str(loc[1]))) if len(loc) > 1 else None
        origin = f"{origin} (environment)" if origin else source
        raise ConfigError(f"{origin}: {where}: {msg}{suffix}") from None

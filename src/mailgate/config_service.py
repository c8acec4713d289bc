"""The sections of relay.toml about the relay itself: the node and its data, the queue's
database, the SMTP and HTTP listeners, the compatibility routes, and retention.

config.py puts them together with the sending sections (config_sending.py) as Settings.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mailgate.config_types import (
    Duration,
    ReadableFile,
    Section,
    Size,
    StrList,
    WritableDir,
    at_runtime,
    check_listen,
    check_rate,
    check_tls_pair,
    config_relative,
)
from mailgate.inflight import default_cap
from mailgate.units import parse_size


class ServerSettings(Section):
    hostname: str = Field(default_factory=socket.getfqdn)
    # Made if missing; checked at load (validate_default: the default too).
    data_dir: WritableDir = Field(default=Path("data"), validate_default=True)
    node_id: str = Field(default_factory=socket.gethostname)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (logs.py)
    # Message bytes held in memory across all SMTP sessions and HTTP requests; over it
    # clients get 452 4.3.1 / HTTP 503 and retry (mailgate.inflight).
    max_inflight_bytes: Size = Field(default_factory=default_cap, gt=0)
    # Free space kept on data_dir's file system: below it new mail is refused (452 4.3.1,
    # HTTP 507) so the queue can still drain. None: see Settings.min_free_space.
    min_free_space: Size | None = None
    # A file of this size kept beside the SQLite queue and deleted when a write that drains
    # the queue finds the disk full (ballast.py); 0: none. None: see Settings.ballast_size.
    ballast_size: Size | None = None


class DatabaseSettings(Section):
    url: str = ""  # empty: sqlite under data_dir

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str, info: ValidationInfo) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        if value.startswith("sqlite:///") and value[len("sqlite:///") :] in ("", ":memory:"):
            # An in-memory queue is not durable, and each connection would see its own.
            raise ValueError("SQLite needs a file path (sqlite:///path/to/mailgate.db)")
        if value.startswith("sqlite:///"):  # its file, as every path: from relay.toml's place
            return "sqlite:///" + str(config_relative(value[len("sqlite:///") :], info))
        return value


class SmtpSettings(Section):
    listen: StrList = ["0.0.0.0:587"]
    implicit_tls_listen: StrList = []
    tls_cert: ReadableFile | None = None
    tls_key: ReadableFile | None = None
    require_auth: bool = True
    trusted_networks: StrList = ["127.0.0.0/8", "::1/128"]
    max_message_size: Size = Field(default=parse_size("25MB"), gt=0)
    max_recipients: int = Field(default=100, ge=1, le=100000)
    max_received_headers: int = Field(default=50, ge=1)
    idle_timeout: Duration = Field(default=300.0, gt=0)
    auth_failure_delay: Duration = 1.0
    # AUTH without TLS from loopback clients. Set false when a proxy on this host
    # forwards remote clients (their connections then come from loopback too).
    auth_plaintext_loopback: bool = True
    # Open connections, in all and from one client address (trusted_networks exempt):
    # beyond them a new connection gets 421 4.7.0 and is closed.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_client: int = Field(default=50, ge=1)

    _listen = field_validator("listen", "implicit_tls_listen")(check_listen)

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a network (use e.g. 10.0.0.0/8)") from exc
        return values

    @model_validator(mode="after")
    def _tls_pair(self, info: ValidationInfo) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.tls_cert is not None and self.tls_key is not None and at_runtime(info):
            check_tls_pair(self.tls_cert, self.tls_key)
        if self.implicit_tls_listen and self.tls_cert is None:
            raise ValueError("implicit_tls_listen needs tls_cert and tls_key")
        return self

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_networks]


class HttpSettings(Section):
    listen: StrList = ["127.0.0.1:8080"]  # [] disables the HTTP API
    public_url: str = ""  # how clients reach the API (for links and the OpenAPI servers list)
    max_body_size: Size = Field(default=parse_size("50MB"), gt=0)
    rate: str = ""  # default per-key request rate, e.g. "100/s"; "" = unlimited

    _listen = field_validator("listen")(check_listen)

    _rate = field_validator("rate")(check_rate)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("an http:// or https:// URL with no query or fragment")
        return value.rstrip("/")


class RetentionSettings(Section):
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


DIALECTS = ("mailsage", "mailstack", "messagepipe")


class CompatSettings(Section):
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

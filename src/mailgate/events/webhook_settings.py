"""``[webhooks]`` and ``[[webhooks.endpoints]]`` of relay.toml."""

from __future__ import annotations

import hashlib
import os

from pydantic import Field, field_validator, model_validator

from mailgate.config_types import Duration, Section, StrList
from mailgate.events.ssrf import UrlRefused, check_url, parse_url
from mailgate.events.webhook_signing import secret_key
from mailgate.events.webhook_types import subscription


class WebhookEndpointSettings(Section):
    url: str
    events: StrList = ["*"]
    secret: str = ""
    secret_env: str = ""
    description: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parse_url(value)
        except UrlRefused as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return subscription(value)

    @model_validator(mode="after")
    def _secret(self) -> WebhookEndpointSettings:
        if bool(self.secret) == bool(self.secret_env):
            raise ValueError("give one of secret or secret_env")
        if self.secret_env and not os.environ.get(self.secret_env):
            raise ValueError(f"secret_env: the environment variable {self.secret_env} is not set")
        secret_key(self.resolved_secret())
        return self

    def resolved_secret(self) -> str:
        return os.environ.get(self.secret_env, "") if self.secret_env else self.secret

    @property
    def id(self) -> str:
        """Stable across restarts and nodes while the URL stays: its deliveries keep it."""
        return "whcfg_" + hashlib.sha256(self.url.encode()).hexdigest()[:24]


class WebhookSettings(Section):
    # Let endpoints be on loopback or private networks (tests, intranets).
    allow_private: bool = False
    timeout: Duration = Field(default=15.0, gt=0, le=60)
    # Requests in flight to one endpoint at a time.
    max_in_flight: int = Field(default=32, ge=1, le=256)
    # How long the previous secret keeps signing after /v1/webhooks/{id}/rotate.
    rotation_overlap: Duration = Field(default=24 * 3600.0, ge=0, le=7 * 24 * 3600)
    endpoints: list[WebhookEndpointSettings] = []

    @model_validator(mode="after")
    def _endpoints(self) -> WebhookSettings:
        urls = [e.url for e in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("endpoints: each url once")
        for i, endpoint in enumerate(self.endpoints):
            try:
                check_url(endpoint.url, allow_private=self.allow_private)
            except UrlRefused as exc:
                raise ValueError(f"endpoints #{i + 1} url: {exc}") from None
        return self

"""``[ui]`` of relay.toml: the dashboard at /ui/ (ui/__init__.py)."""

from __future__ import annotations

import ipaddress

from pydantic import Field

from mailgate.config_types import Duration, Section
from mailgate.units import parse_hostport


class UiSettings(Section):
    # None: on when every [http] listen address is loopback (ui_enabled), off otherwise.
    enabled: bool | None = None
    # How long a login lasts; the cookie and the signed session both expire then.
    session_ttl: Duration = Field(default=12 * 3600.0, gt=0, le=30 * 24 * 3600)


def _loopback(address: str) -> bool:
    host, _port = parse_hostport(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_enabled(ui: UiSettings, listen: list[str]) -> bool:
    """Whether /ui/ is served: as set, or by default only on loopback-only listeners
    (a dashboard must not appear on a public port without the operator saying so)."""
    if ui.enabled is not None:
        return ui.enabled
    return bool(listen) and all(_loopback(a) for a in listen)

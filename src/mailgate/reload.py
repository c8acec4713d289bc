"""Live reload (SIGHUP, ``mailgate reload``): which settings a running relay can take from a
new relay.toml, and which wait for a restart.

Settings are frozen: a reload never changes the running object. It reads and validates the
whole file again (a bad file is refused, naming the key, and nothing changes), then builds
the settings to run with: the new file's, except the keys of :data:`RESTART_ONLY`, which
keep their running values (each one that differs is logged as "needs restart"). Every part
that holds settings is then handed that object (``reconfigure``); App.reload does it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel

from mailgate.config import Settings, load_settings
from mailgate.exceptions import ConfigError

# (section, key) or (section,) for the whole section: what needs a restart, and why.
RESTART_ONLY: dict[tuple[str, ...], str] = {
    ("server", "hostname"): "the greeting, Message-IDs and DSNs of the running process",
    ("server", "data_dir"): "holds the lock and the SQLite database",
    ("server", "node_id"): "names this node's leases",
    ("server", "log_level"): "set when the relay and its children start",
    ("server", "log_format"): "set when the relay and its children start",
    ("server", "max_inflight_bytes"): "the budget of message bytes is made at start",
    ("ui",): "the dashboard is mounted and configured at start",
    ("server", "min_free_space"): "the free-space watch is set up at start",
    ("server", "ballast_size"): "the reserve ballast is set up at start",
    ("retention",): "the purge task is set up at start",
    ("database",): "the queue's connections and writer",
    ("smtp", "listen"): "bound sockets",
    ("smtp", "implicit_tls_listen"): "bound sockets",
    ("smtp", "tls_cert"): "loaded into the listeners' TLS context",
    ("smtp", "tls_key"): "loaded into the listeners' TLS context",
    ("http", "listen"): "bound sockets",
    ("http", "public_url"): "tracking and unsubscribe links are set up with it at start",
    ("bounces",): "the bounce intake and VERP addresses are set up at start",
    ("delivery", "enabled"): "the delivery process is started (or not) at start",
    ("compat", "enabled"): "the compatibility routes are mounted at start",
    ("webhooks", "max_in_flight"): "each endpoint's lane is sized when it starts",
}


def _value(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for name in path:
        value = getattr(value, name)
    return value


def _pin(new: Settings, old: Settings, path: tuple[str, ...]) -> Settings:
    """``new`` with the value at ``path`` taken from ``old`` (copies, never mutation)."""
    if len(path) == 1:
        return new.model_copy(update={path[0]: getattr(old, path[0])})
    section, key = path
    inner: BaseModel = getattr(new, section)
    pinned = inner.model_copy(update={key: getattr(getattr(old, section), key)})
    return new.model_copy(update={section: pinned})


def _describe(path: tuple[str, ...]) -> str:
    return f"[{path[0]}]" + (f" {path[1]}" if len(path) > 1 else "")


def plan(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """The settings to run with after a reload, and a line per restart-only key that
    changed. Raises ConfigError if the mix is not a valid configuration (e.g. tracking
    turned on while ``[http] public_url``, which needs a restart, is still empty)."""
    effective = new
    restart: list[str] = []
    for path, why in RESTART_ONLY.items():
        if _value(old, path) != _value(new, path):
            restart.append(f"{_describe(path)} changed: needs a restart ({why})")
            effective = _pin(effective, old, path)
    if restart:
        try:
            # The cross-section checks of Settings, on the mix (model_copy does not validate).
            effective._names()
        except ValueError as exc:
            raise ConfigError(
                f"{new.source}: {exc} (with the restart-only settings still running)"
            ) from None
    return effective, restart


def read(old: Settings) -> tuple[Settings, list[str]]:
    """Read ``old.source`` again: the settings to run with and the needs-restart lines.
    Raises ConfigError naming the file and key when the file is not valid."""
    return plan(old, load_settings(old.source, runtime=True))


def lock_path(settings: Settings) -> str:
    """The file a running ``mailgate serve`` holds locked, with its pid (App._lock_data_dir)."""
    return str(settings.server.data_dir / "mailgate.lock")


def outcome_path(settings: Settings) -> str:
    """Where a serve writes how its last reload ended, for ``mailgate reload`` to read."""
    return str(settings.server.data_dir / "mailgate.reload")


def write_outcome(settings: Settings, refused: str | None, now: float) -> None:
    """The last reload's outcome (``refused``: why it was, None: applied), replaced at once
    (written beside, then renamed); best effort, the log says it too."""
    path = outcome_path(settings)
    body = json.dumps({"at": now, "pid": os.getpid(), "refused": refused})
    try:
        with open(path + ".tmp", "w") as fh:
            fh.write(body)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def read_outcome(settings: Settings) -> dict[str, Any] | None:
    try:
        with open(outcome_path(settings)) as fh:
            found: dict[str, Any] = json.load(fh)
    except (OSError, ValueError):
        return None
    return found

"""reload.plan: what a reload applies, what it keeps for a restart, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from mailgate.config import load_settings
from mailgate.exceptions import ConfigError
from mailgate.reload import plan


def settings(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "server": {"data_dir": "/tmp/x", "hostname": "relay.test"},
        "domains": [{"name": "example.com"}],
        "providers": [{"name": "up", "kind": "maildir", "path": "/tmp/md"}],
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return load_settings(data=data, environ={})


def test_reloadable_changes_apply_with_nothing_to_restart() -> None:
    old = settings()
    new = settings(
        domains=[{"name": "example.com"}, {"name": "new.example"}],
        smtp={"max_recipients": 5, "trusted_networks": ["10.0.0.0/8"]},
        retry={"min_backoff": "1m"},
    )
    effective, restart = plan(old, new)
    assert restart == []
    assert effective == new


def test_restart_only_keys_keep_their_running_values() -> None:
    old = settings()
    new = settings(
        smtp={"listen": ["127.0.0.1:2525"], "max_recipients": 5},
        server={"log_format": "json"},
        database={"url": "sqlite:////tmp/other.db"},
    )
    effective, restart = plan(old, new)
    assert effective.smtp.listen == old.smtp.listen
    assert effective.smtp.max_recipients == 5  # the rest of the section applies
    assert effective.server.log_format == "text"
    assert effective.database == old.database
    assert [line.split(" changed")[0] for line in restart] == [
        "[server] log_format",
        "[database]",
        "[smtp] listen",
    ]
    assert all("needs a restart" in line for line in restart)


def test_a_mix_that_is_not_valid_is_refused() -> None:
    old = settings()
    # Tracking on needs public_url, and public_url needs a restart.
    new = settings(http={"public_url": "https://mail.example.com"}, tracking={"opens": True})
    with pytest.raises(ConfigError, match="public_url"):
        plan(old, new)

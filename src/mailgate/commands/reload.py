"""``mailgate reload``: check relay.toml, then have the running ``mailgate serve`` of its
data_dir read it again (SIGHUP; what applies at once and what needs a restart: reload.py)."""

from __future__ import annotations

import fcntl
import os
import signal
import sys

import click

from mailgate.commands.common import config_option, settings_or_exit
from mailgate.exceptions import ConfigError
from mailgate.reload import lock_path


def serving_pid(path: str) -> int | None:
    """The pid of the ``mailgate serve`` holding the lock file ``path``, None if none does."""
    try:
        fh = open(path)  # noqa: SIM115 - closed below, after the lock test
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fh, fcntl.LOCK_UN)  # we got it: nobody is serving
        return None


@click.command("reload")
@config_option
def reload_command(config_path: str) -> None:
    """Apply a changed relay.toml to the running serve, without a restart.

    The file is checked first (a bad key: exit 2, and the serve is not told). The serve is
    the one running with the file's data_dir; its log says what was applied and which
    changes need a restart. Exit 1 if no serve is running.
    """
    from mailgate.delivery.dkim import DkimSigner

    settings = settings_or_exit(config_path)
    try:
        DkimSigner.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    path = lock_path(settings)
    pid = serving_pid(path)
    if pid is None:
        click.echo(f"error: no mailgate serve is running with {path}", err=True)
        sys.exit(1)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        click.echo(f"error: mailgate serve (pid {pid}) is gone", err=True)
        sys.exit(1)
    except PermissionError:
        click.echo(f"error: not allowed to signal mailgate serve (pid {pid})", err=True)
        sys.exit(1)
    click.echo(f"{config_path}: ok; sent SIGHUP to mailgate serve (pid {pid})")

"""``mailgate reload``: check relay.toml, then have the running ``mailgate serve`` of its
data_dir read it again (SIGHUP; what applies at once and what needs a restart: reload.py)."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time

import click

from mailgate.commands.common import config_option, settings_or_exit
from mailgate.exceptions import ConfigError
from mailgate.reload import lock_path, read_outcome

# How long `mailgate reload` waits for the serve's answer (a new delivery process starts
# within seconds; the serve's own limit for that is 15 s).
ANSWER_WAIT = 30.0


def serving(path: str) -> tuple[int, str, bool] | None:
    """The pid of the ``mailgate serve`` holding the lock file ``path``, the config file it
    reads again on a reload ("" if an older serve did not say), and whether it answers a
    reload (reload.outcome_path); None if none holds it."""
    try:
        fh = open(path)  # noqa: SIM115 - closed below, after the lock test
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, config, answers, *_ = [*fh.read().split("\n"), "", "", ""]
            if not pid.strip().isdigit():
                return None
            return int(pid), config.strip(), answers.strip() == "answers"
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
    found = serving(path)
    if found is None:
        click.echo(f"error: no mailgate serve is running with {path}", err=True)
        sys.exit(1)
    pid, serves, answers = found
    if serves and os.path.realpath(serves) != os.path.realpath(config_path):
        # The serve would read its own file again, not this one: "ok" would be a lie.
        click.echo(
            f"error: mailgate serve (pid {pid}) reads {serves}, not {config_path}: a reload "
            f"applies that file (mailgate reload --config {serves}); another file needs a "
            "restart with it",
            err=True,
        )
        sys.exit(2)
    before = read_outcome(settings)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        click.echo(f"error: mailgate serve (pid {pid}) is gone", err=True)
        sys.exit(1)
    except PermissionError:
        click.echo(f"error: not allowed to signal mailgate serve (pid {pid})", err=True)
        sys.exit(1)
    if not answers:  # a serve of an earlier release, until its restart
        click.echo(f"{config_path}: ok; sent SIGHUP to mailgate serve (pid {pid}): see its log")
        return
    # The serve says how it went (a new delivery process must start, for one): "ok" here
    # once meant only that the file had been read.
    deadline = time.monotonic() + ANSWER_WAIT
    while time.monotonic() < deadline:
        found = read_outcome(settings)
        if found is not None and found != before and found.get("pid") == pid:
            if found.get("refused"):
                click.echo(
                    f"error: mailgate serve (pid {pid}) refused the reload, the "
                    f"running settings stay: {found['refused']}",
                    err=True,
                )
                sys.exit(1)
            click.echo(f"{config_path}: reloaded by mailgate serve (pid {pid})")
            return
        time.sleep(0.1)
    click.echo(
        f"error: sent SIGHUP to mailgate serve (pid {pid}), which has not said within "
        f"{ANSWER_WAIT:.0f} s how the reload went: see its log",
        err=True,
    )
    sys.exit(1)

"""``mailgate suppressions``: list, add and remove the addresses mail is not sent to."""

from __future__ import annotations

import sys

import click

from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)


@click.group()
def suppressions() -> None:
    """Addresses mail is no longer sent to (hard bounces are added automatically)."""


@suppressions.command("list")
@config_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
def suppressions_list(config_path: str, limit: int) -> None:
    """Newest first: address, reason, when, and the reply or note that caused it."""
    settings = settings_or_exit(config_path)
    rows = run_or_exit(with_store(settings, lambda st: st.suppressions.list(limit=limit)))
    click.echo(f"{'ADDRESS':<40} {'REASON':<12} {'SINCE':<21} DETAIL")
    for r in rows:
        click.echo(f"{r.address:<40} {r.reason:<12} {timestamp(r.created_at):<21} {r.detail}")


@suppressions.command("add")
@config_option
@click.argument("address")
@click.option(
    "--reason",
    type=click.Choice(["manual", "complaint", "unsubscribe", "hard_bounce"]),
    default="manual",
    show_default=True,
)
@click.option("--note", default="", help="Why (kept with the entry).")
def suppressions_add(config_path: str, address: str, reason: str, note: str) -> None:
    """Stop sending to ADDRESS (a running relay applies it within seconds)."""
    import time

    from mailgate.policy import split_address
    from mailgate.store import Suppression

    if split_address(address) is None:
        click.echo(f"error: {address!r} is not an email address", err=True)
        sys.exit(2)
    settings = settings_or_exit(config_path)
    entry = Suppression(address.lower(), reason, note, "", time.time())
    run_or_exit(with_store(settings, lambda st: st.suppressions.add([entry])))
    click.echo(f"suppressed {address.lower()} ({reason})")


@suppressions.command("remove")
@config_option
@click.argument("address")
def suppressions_remove(config_path: str, address: str) -> None:
    """Send to ADDRESS again."""
    settings = settings_or_exit(config_path)
    if not run_or_exit(with_store(settings, lambda st: st.suppressions.remove(address))):
        click.echo(f"error: {address} is not suppressed", err=True)
        sys.exit(1)
    click.echo(f"removed {address.lower()}")

"""What every ``mailgate`` subcommand shares: the --config option, loading settings,
running a coroutine with errors as one line, opening the store."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from mailgate.config import Settings, load_settings
from mailgate.exceptions import ConfigError, MailgateError
from mailgate.store import Store

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    default="relay.toml",
    envvar="MAILGATE_CONFIG",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Path of relay.toml.",
)


def settings_or_exit(path: str, *, runtime: bool = False) -> Settings:
    """The settings, or exit 2 naming the problem; ``runtime`` as load_settings."""
    try:
        return load_settings(path, runtime=runtime)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def run_or_exit(coro: Awaitable[T], runner: Callable[..., Any] = asyncio.run) -> T:
    try:
        return runner(coro)  # type: ignore[no-any-return]
    except MailgateError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """``fn`` on the queue's store; an empty database is made, an older schema refused
    (SchemaMismatch): a command run beside the serve of the release before an upgrade
    would have changed the schema under it."""
    store = await Store.open(settings.database_url, only_new=True)
    try:
        return await fn(store)
    finally:
        await store.close()


def timestamp(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

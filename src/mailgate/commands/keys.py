"""``mailgate keys``: create, list and revoke API keys (SMTP AUTH password, HTTP bearer)."""

from __future__ import annotations

import sys
import time

import click

from mailgate.address_syntax import ace
from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)
from mailgate.quota import parse_quota
from mailgate.store import KeyRecord, Store


@click.group()
def keys() -> None:
    """Manage API keys (SMTP AUTH password and HTTP bearer token)."""


@keys.command("create")
@config_option
@click.option("--name", required=True, help="A name for the key; also usable as SMTP user name.")
@click.option(
    "--scope", type=click.Choice(["send", "read", "admin"]), default="send", show_default=True
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="Restrict the key to this sender domain (repeatable); default: all configured domains.",
)
@click.option(
    "--rate",
    default="",
    help='HTTP API request limit for this key, e.g. "10/s" or "1000/h" (default: [http] rate).',
)
@click.option(
    "--default-from",
    "default_from",
    default="",
    help="Sender of API requests that name none and whose template has none "
    "(before [compat] default_from); it must be of a sending domain of the key.",
)
@click.option(
    "--quota",
    default="",
    help='Accepted recipients per calendar month or day (UTC), e.g. "10000/month" or '
    '"500/d"; over it the API answers 429 and SMTP 452 4.7.1.',
)
def keys_create(
    config_path: str,
    name: str,
    scope: str,
    domains: tuple[str, ...],
    rate: str,
    default_from: str,
    quota: str,
) -> None:
    """Create a key; the key itself is printed alone on the last line."""
    from mailgate.credentials import create_key, sender_domains, validate_default_from
    from mailgate.store.keys import DuplicateKeyName

    settings = settings_or_exit(config_path)
    configured = settings.domain_names()
    kept, unknown = sender_domains(domains, configured)
    domains = tuple(kept)
    if unknown:
        click.echo(f"error: domain(s) not in [[domains]]: {', '.join(unknown)}", err=True)
        sys.exit(2)
    allowed = set(domains) or configured
    try:  # the form first: "Name <addr>" made a domain "example.com>" below
        validate_default_from(default_from)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sender_domain = ace(default_from.rpartition("@")[2].strip().lower())
    if default_from and sender_domain not in allowed:
        click.echo(
            f"error: --default-from {default_from!r}: {sender_domain} is not a sending domain "
            + ("of this key (--domain)" if domains else "in [[domains]]"),
            err=True,
        )
        sys.exit(2)

    async def create(st: Store) -> str:
        return await create_key(
            st, name, scope, domains, rate, default_from=default_from, quota=quota
        )

    try:
        key = run_or_exit(with_store(settings, create))
    except DuplicateKeyName:
        click.echo(f"error: a key named {name!r} already exists", err=True)
        sys.exit(2)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"created key {name!r} (scope {scope}); it is shown only once:", err=True)
    click.echo(key)


def _usage(record: KeyRecord, used: dict[str, int]) -> str:
    """'120 of 10000/month': recipients accepted this period, of the quota."""
    return f"{used.get(record.id, 0)} of {record.quota}" if record.quota else "-"


@keys.command("list")
@config_option
def keys_list(config_path: str) -> None:
    """List keys (never the keys themselves), with this period's quota usage."""
    settings = settings_or_exit(config_path)
    now = time.time()

    async def read(st: Store) -> tuple[list[KeyRecord], dict[str, int]]:
        records = await st.keys.all()
        used = {
            r.id: await st.keys.quota_usage(r.id, parse_quota(r.quota).period(now))
            for r in records
            if r.quota
        }
        return records, used

    records, used = run_or_exit(with_store(settings, read))
    click.echo(
        f"{'NAME':<24} {'ID':<14} {'SCOPE':<6} {'CREATED':<21} {'STATUS':<8} {'RATE':<8} "
        f"{'QUOTA (USED)':<18} {'DEFAULT FROM':<24} DOMAINS"
    )
    for r in records:
        status = "active" if r.active else "revoked"
        click.echo(
            f"{r.name:<24} {r.id:<14} {r.scope:<6} {timestamp(r.created_at):<21} {status:<8} "
            f"{r.rate or '-':<8} {_usage(r, used):<18} {r.default_from or '-':<24} "
            f"{','.join(r.domains) or '*'}"
        )


@keys.command("revoke")
@config_option
@click.argument("name_or_id")
def keys_revoke(config_path: str, name_or_id: str) -> None:
    """Revoke a key by name or id: refused at once over SMTP, within 2 s over HTTP."""
    settings = settings_or_exit(config_path)
    done = run_or_exit(with_store(settings, lambda st: st.keys.revoke(name_or_id, time.time())))
    if not done:
        click.echo(f"error: no active key named {name_or_id!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked {name_or_id}")

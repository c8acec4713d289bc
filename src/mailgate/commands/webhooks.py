"""``mailgate webhooks``: the endpoints, their deliveries, and sending failed ones again."""

from __future__ import annotations

import datetime as dt
import time

import click

from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)
from mailgate.exceptions import MailgateError
from mailgate.store import Store
from mailgate.store.webhooks import Endpoint, WebhookDelivery


@click.group()
def webhooks() -> None:
    """Webhook endpoints and deliveries: list, show failures, replay."""


def _since(value: str) -> float:
    """An ISO 8601 time (UTC unless it says), or a duration back from now: 2h, 3d."""
    from mailgate.units import parse_duration

    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time (2026-12-01T08:00:00Z) or a duration back from now (2h, 3d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@webhooks.command("list")
@config_option
def webhooks_list(config_path: str) -> None:
    """List the endpoints (from relay.toml and from /v1/webhooks)."""
    settings = settings_or_exit(config_path)
    rows: list[Endpoint] = run_or_exit(with_store(settings, lambda st: st.webhooks.endpoints()))
    if not rows:
        click.echo("no webhook endpoints: add [[webhooks.endpoints]] or POST /v1/webhooks")
        return
    for e in rows:
        state = "enabled" if e.disabled_at is None else f"disabled ({e.disabled_reason})"
        click.echo(f"{e.id}  {e.source:<6}  {state}  {e.url}  {','.join(e.events)}")


@webhooks.command("deliveries")
@config_option
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["pending", "succeeded", "failed"]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
def webhooks_deliveries(config_path: str, endpoint_id: str, status: str | None, limit: int) -> None:
    """An endpoint's deliveries, newest first."""
    settings = settings_or_exit(config_path)

    async def read(st: Store) -> list[WebhookDelivery]:
        await _known(st, endpoint_id)
        return await st.webhooks.deliveries(endpoint_id, status=status, limit=limit)

    rows: list[WebhookDelivery] = run_or_exit(with_store(settings, read))
    for w in rows:
        due = f"  next={timestamp(w.next_attempt_at)}" if w.next_attempt_at is not None else ""
        click.echo(
            f"msg_{w.id}  {timestamp(w.created_at)}  {w.event_type:<22}  {w.status:<9}  "
            f"attempts={w.attempts}{due}  {w.last_error or ''}"
        )


async def _known(st: Store, endpoint_id: str) -> None:
    """MailgateError (exit 1) for an endpoint id that names none: an empty listing, exit
    0, looked like an endpoint with nothing to show."""
    if await st.webhooks.endpoint(endpoint_id) is None:
        raise MailgateError(f"no webhook endpoint {endpoint_id} (see mailgate webhooks list)")


@webhooks.command("replay")
@config_option
@click.option("--since", "since_text", required=True, help="ISO time, or a duration back (2h).")
@click.option("--endpoint", "endpoint_id", default=None, help="Only this endpoint's.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["failed", "succeeded"]),
    default=("failed",),
    show_default=True,
    help="Which deliveries to send again (repeat the option for several).",
)
def webhooks_replay(
    config_path: str, since_text: str, endpoint_id: str | None, statuses: tuple[str, ...]
) -> None:
    """Send again the deliveries made since --since (failed ones by default), with their
    original webhook-id and a fresh retry schedule. A running relay sends them within a
    second."""
    settings = settings_or_exit(config_path)
    since = _since(since_text)

    async def replay(st: Store) -> int:
        if endpoint_id is not None:
            await _known(st, endpoint_id)
        return await st.webhooks.replay(
            since, time.time(), endpoint_id=endpoint_id, statuses=statuses
        )

    count = run_or_exit(with_store(settings, replay))
    click.echo(f"{count} webhook deliveries will be sent again")

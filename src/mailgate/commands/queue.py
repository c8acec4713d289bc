"""``mailgate queue``: list and show messages; retry, hold, release, delete or bounce
deliveries chosen by the same selection options."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)
from mailgate.models import DeliveryStatus
from mailgate.store import QueueFilter, Store
from mailgate.units import parse_duration


@click.group()
def queue() -> None:
    """Inspect the queue; retry, hold, release or delete deliveries."""


def _summary(deliveries: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items()))


@queue.command("list")
@config_option
@click.option(
    "--status",
    default=None,
    type=click.Choice([s.value for s in DeliveryStatus], case_sensitive=False),
    help="Only messages in this status (the message's own, as GET /v1/messages/ID shows it).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def queue_list(config_path: str, status: str | None, limit: int, as_json: bool) -> None:
    """List messages, newest first, with their recipients' statuses."""
    settings = settings_or_exit(config_path)
    rows = run_or_exit(
        with_store(settings, lambda st: st.list_messages(limit=limit, status=status))
    )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    click.echo(f"{'ID':<36}  {'CREATED':<20}  {'FROM':<30}  RCPTS  STATUS")
    for row in rows:
        click.echo(
            f"{row['id']:<36}  {timestamp(row['created_at']):<20}  {row['sender'][:30]:<30}  "
            f"{len(row['deliveries']):>5}  {_summary(row['deliveries'])}"
        )


@queue.command("show")
@config_option
@click.argument("message_id")
def queue_show(config_path: str, message_id: str) -> None:
    """Show one message: each recipient's status, attempts and last response, and its events."""
    settings = settings_or_exit(config_path)

    async def fetch(st: Store) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        return await st.get_message(message_id), await st.events_of(message_id)

    msg, events = run_or_exit(with_store(settings, fetch))
    if msg is None:
        click.echo(f"error: no message {message_id}", err=True)
        sys.exit(1)
    click.echo(f"id:         {msg['id']}")
    click.echo(f"created:    {timestamp(msg['created_at'])}")
    click.echo(f"from:       {msg['sender']}")
    click.echo(f"subject:    {msg['subject']}")
    click.echo(f"message-id: {msg['message_id_header']}")
    click.echo(f"source:     {msg['source']} ({msg['credential']}, {msg['client_address'] or '-'})")
    click.echo(f"size:       {msg['size']} bytes")
    click.echo("recipients:")
    for d in msg["deliveries"]:
        nxt = f" next {timestamp(d['next_attempt_at'])}" if d["next_attempt_at"] else ""
        failed = d["status"] in ("bounced", "deferred", "failed") and d.get("bounce_category")
        category = f" [{d['bounce_category']}]" if failed else ""
        click.echo(
            f"  {d['recipient']}: {d['status']}{category} after {d['attempts']} attempt(s){nxt}"
        )
        if d["last_response"]:
            click.echo(
                f"    last response: {d['last_response']}"
                + (f" ({d['provider']})" if d["provider"] else "")
            )
    click.echo("events:")
    for e in events:
        extra = f" via {e['provider']}: {e['response']}" if e["provider"] or e["response"] else ""
        extra += f" [{e['category']}]" if e["category"] else ""
        click.echo(f"  {timestamp(e['at'])} {e['type']:<9} {e['recipient']}{extra}")


_ACTION_HELP = {
    "retry": "Make waiting deliveries due now (queued or deferred).",
    "hold": "Hold waiting deliveries: no attempts (and no expiry) until released.",
    "release": "Release held deliveries: due now.",
    "delete": "Cancel waiting or held deliveries (no bounce is sent).",
    "bounce": "Bounce waiting or held deliveries: a DSN goes to each sender (like "
    "postsuper -e/-f or kcli bounce), and the 'bounced' event to webhooks.",
    "requeue": "Queue failed or bounced deliveries again, due now (like postsuper -r); "
    "[retry] max_age counts from now. A recipient now on the suppression list is left "
    "out.",
}


_SELECTION_HELP = (
    "\n\nSelect by MESSAGE_IDS, --to, --from, --provider and --older-than (all given must "
    "match), or --all. Deliveries being attempted right now are left alone. A running "
    "relay sees a retry or release within 5 seconds."
)


def _queue_action(action: str) -> None:
    """Register ``mailgate queue <action>`` with the shared selection options."""

    @queue.command(action, help=_ACTION_HELP[action] + _SELECTION_HELP)
    @config_option
    @click.argument("message_ids", nargs=-1)
    @click.option("--to", "recipient", default="", help="Recipient address or domain.")
    @click.option("--from", "sender", default="", help="Envelope sender address or domain.")
    @click.option("--provider", default="", help="Last tried through, or pinned to, PROVIDER.")
    @click.option("--older-than", default="", help="Accepted longer ago than this (e.g. 2h).")
    @click.option("--all", "everything", is_flag=True, help="Every matching delivery.")
    @click.option(
        "--reason",
        default="",
        hidden=action != "bounce",
        help="bounce: the diagnostic the DSN and the event carry.",
    )
    def command(
        config_path: str,
        message_ids: tuple[str, ...],
        recipient: str,
        sender: str,
        provider: str,
        older_than: str,
        everything: bool,
        reason: str,
    ) -> None:
        if not (message_ids or recipient or sender or provider or older_than or everything):
            click.echo(
                "error: name message ids, --to, --from, --provider, --older-than, or --all",
                err=True,
            )
            sys.exit(2)
        now = time.time()
        cutoff = None
        if older_than:
            try:
                cutoff = now - parse_duration(older_than)
            except ValueError as exc:
                click.echo(f"error: --older-than: {exc}", err=True)
                sys.exit(2)
        selection = QueueFilter(message_ids, recipient, sender, provider, cutoff)
        settings = settings_or_exit(config_path)
        if message_ids:
            unknown = run_or_exit(with_store(settings, lambda st: _unknown(st, message_ids)))
            if unknown:  # a typo said "0 deliveries", exit 0, like a message with nothing to do
                click.echo(f"error: no message {', '.join(unknown)}", err=True)
                sys.exit(1)
        if action == "bounce":
            from mailgate.delivery.operator_bounce import dsn_builder, reply_line

            build = dsn_builder(settings.server.hostname)
            done = run_or_exit(
                with_store(
                    settings, lambda st: st.bounce(selection, now, reply_line(reason), build)
                )
            )
            click.echo(
                f"bounce: {done.deliveries} deliveries of {done.messages} messages,"
                f" {len(done.dsns)} DSN(s) queued"
            )
            return
        if action == "requeue":
            again = run_or_exit(
                with_store(settings, lambda st: st.requeue_matching(selection, now))
            )
            left = f", {len(again.suppressed)} left out (suppressed)" if again.suppressed else ""
            click.echo(
                f"requeue: {len(again.requeued)} deliveries of {again.messages} messages{left}"
            )
            return
        changed, messages = run_or_exit(
            with_store(settings, lambda st: st.operate(action, selection, now))
        )
        click.echo(f"{action}: {changed} deliveries of {messages} messages")


async def _unknown(st: Store, message_ids: tuple[str, ...]) -> list[str]:
    """The ids of ``message_ids`` that name no message (retention may have removed it)."""
    return [m for m in message_ids if await st.get_message(m) is None]


for _action in _ACTION_HELP:
    _queue_action(_action)

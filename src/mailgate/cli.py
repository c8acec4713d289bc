"""The ``mailgate`` command."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mailgate import __version__
from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)
from mailgate.commands.db import db
from mailgate.commands.jobs import jobs
from mailgate.commands.keys import keys
from mailgate.commands.reload import reload_command
from mailgate.commands.webhooks import webhooks
from mailgate.exceptions import ConfigError
from mailgate.logs import setup_logging
from mailgate.store import QueueFilter, Store
from mailgate.units import parse_duration


@click.group()
@click.version_option(__version__, prog_name="mailgate")
def main() -> None:
    """mailgate: SMTP relay and submission gateway with a durable queue."""


@main.command()
@config_option
def serve(config_path: str) -> None:
    """Run the SMTP listeners and the delivery loop until SIGTERM/SIGINT."""
    from mailgate.app import App
    from mailgate.memory import tune_allocator

    settings = settings_or_exit(config_path)
    setup_logging(settings.server.log_level, settings.server.log_format)
    tune_allocator()  # before the listeners allocate: big buffers go back when freed
    app = App(settings)
    try:
        import uvloop
    except ImportError:
        run_or_exit(app.serve())
    else:
        run_or_exit(app.serve(), runner=uvloop.run)


@main.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate relay.toml: exit 0, or print the bad key and exit 2."""
    from mailgate.delivery.dkim import DkimSigner

    s = settings_or_exit(config_path)
    try:
        signer = DkimSigner.from_settings(s)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{config_path}: ok")
    starttls = "STARTTLS offered" if s.smtp.tls_cert else "no TLS (set tls_cert/tls_key)"
    for address in s.smtp.listen:
        click.echo(f"  smtp listen:        {address} ({starttls})")
    for address in s.smtp.implicit_tls_listen:
        click.echo(f"  smtp implicit TLS:  {address}")
    for address in s.http.listen:
        click.echo(f"  http listen:        http://{address}")
    click.echo(f"  sender domains:     {', '.join(sorted(s.domain_names())) or '(none)'}")
    for d in s.domains:
        pairs = d.dkim_pairs()
        if pairs:
            selectors = ", ".join(selector for selector, _ in pairs)
            click.echo(f"  dkim:               {d.name} (selectors {selectors})")
    unsigned = sorted(s.domain_names() - signer.domains())
    if unsigned:
        click.echo(f"  not DKIM-signed:    {', '.join(unsigned)}")
    for p in sorted(s.providers, key=lambda p: p.priority):
        where = str(p.path) if p.kind == "maildir" else f"{p.host}:{p.resolved_port()} tls={p.tls}"
        click.echo(f"  provider:           {p.name} ({p.kind}, priority {p.priority}) {where}")
    click.echo(f"  database:           {s.database_url.split('+', 1)[0]}")
    if not s.delivery.enabled:
        click.echo("  delivery:           DISABLED (mail is queued, not sent)")


@main.command("send")
@config_option
@click.option("--from", "sender", required=True, help='"Name <addr>" or an address.')
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable).")
@click.option("--cc", multiple=True, help="Cc recipient (repeatable).")
@click.option("--bcc", multiple=True, help="Bcc recipient (repeatable).")
@click.option("--subject", required=True)
@click.option("--text", default=None, help="Plain-text body ('-' reads standard input).")
@click.option("--html", default=None, help="HTML body.")
@click.option("--header", "headers", multiple=True, help='Extra header "Name: value" (repeatable).')
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Attach a file (repeatable).",
)
def send(
    config_path: str,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str,
    text: str | None,
    html: str | None,
    headers: tuple[str, ...],
    attachments: tuple[str, ...],
) -> None:
    """Queue a message through the same accept path as SMTP and HTTP (for smoke tests).

    A running `mailgate serve` on the same database picks it up within a few seconds.
    """
    import base64
    import mimetypes
    import time
    from pathlib import Path

    from mailgate.accept import Acceptor
    from mailgate.exceptions import PolicyRefused
    from mailgate.ingress.http_models import SendRequest
    from mailgate.ingress.http_validation import ApiError, prepare_send
    from mailgate.models import Credential

    settings = settings_or_exit(config_path)
    if text == "-":
        text = sys.stdin.read()
    extra: dict[str, str] = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep:
            click.echo(f'error: --header {h!r}: expected "Name: value"', err=True)
            sys.exit(2)
        extra[name.strip()] = value.strip()
    files = [
        {
            "filename": Path(p).name,
            "content": base64.b64encode(Path(p).read_bytes()).decode(),
            "content_type": mimetypes.guess_type(p)[0] or "application/octet-stream",
        }
        for p in attachments
    ]
    request = SendRequest.model_validate(
        {
            "from": sender,
            "to": list(to),
            "cc": list(cc) or None,
            "bcc": list(bcc) or None,
            "subject": subject,
            "text": text,
            "html": html,
            "headers": extra or None,
            "attachments": files or None,
        }
    )
    credential = Credential(kind="cli", id="", name="cli", scope="admin")

    async def queue_it(store: Store) -> str:
        prepared = prepare_send(
            request,
            settings=settings,
            credential=credential,
            client_address="",
            template=None,
            template_data=None,
            now=time.time(),
        )
        accepted = await Acceptor(settings, store).accept(prepared.submission)
        return accepted.id

    try:
        queue_id = run_or_exit(with_store(settings, queue_it))
    except ApiError as exc:
        click.echo(f"error: {exc.code}: {exc.message}", err=True)
        sys.exit(2)
    except PolicyRefused as exc:
        click.echo(f"error: {exc.reply}", err=True)
        sys.exit(2)
    click.echo(queue_id)


@main.group()
def domains() -> None:
    """The sending domains of [[domains]]."""


@domains.command("check")
@config_option
def domains_check(config_path: str) -> None:
    """Check DKIM, SPF, DMARC and MX in DNS; print what is right and what to fix.

    Exit 0 when everything is right, 1 when something needs fixing.
    """
    from mailgate.domains_check import check_domains

    settings = settings_or_exit(config_path)
    try:
        rows = run_or_exit(check_domains(settings))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{'DOMAIN':<28} {'CHECK':<12} {'':<4} DETAIL")
    for r in rows:
        click.echo(f"{r.domain:<28} {r.what:<12} {'ok' if r.ok else 'FIX':<4} {r.detail}")
    sys.exit(0 if all(r.ok for r in rows) else 1)


@main.group()
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


@main.group()
def queue() -> None:
    """Inspect the queue; retry, hold, release or delete deliveries."""


def _summary(deliveries: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items()))


@queue.command("list")
@config_option
@click.option("--status", default=None, help="Only messages with a recipient in this status.")
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
        changed, messages = run_or_exit(
            with_store(settings, lambda st: st.operate(action, selection, now))
        )
        click.echo(f"{action}: {changed} deliveries of {messages} messages")


for _action in _ACTION_HELP:
    _queue_action(_action)


# ---------------------------------------------------------------- dkim


@main.group()
def dkim() -> None:
    """DKIM keys for the [[domains]] of relay.toml."""


@dkim.command("keygen")
@click.option("--domain", required=True, help="The sender domain (d=), e.g. example.com.")
@click.option("--selector", required=True, help="The selector (s=), e.g. mail or s2025.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa is verified everywhere; ed25519 (RFC 8463) only by some receivers: add it "
    "beside an rsa key, not instead of one.",
)
@click.option(
    "--bits", type=click.IntRange(2048, 4096), default=2048, show_default=True, help="RSA key size."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Private key file to create (mode 0600) [default: <selector>.<domain>.dkim.pem].",
)
def dkim_keygen(domain: str, selector: str, kind: str, bits: int, out: str | None) -> None:
    """Create a DKIM key; print the DNS TXT record to publish and the relay.toml lines."""
    import os
    from pathlib import Path

    from mailgate.config_sending import check_dns_labels
    from mailgate.delivery.dkim import dns_record_name, dns_txt_strings, generate_key

    try:
        domain = check_dns_labels(domain.lower().rstrip("."))
    except ValueError as exc:
        click.echo(f"error: --domain: {exc}", err=True)
        sys.exit(2)
    try:
        selector = check_dns_labels(selector)
    except ValueError as exc:
        click.echo(f"error: --selector: {exc}", err=True)
        sys.exit(2)
    path = Path(out if out is not None else f"{selector}.{domain}.dkim.pem")
    pem, txt = generate_key("ed25519" if kind == "ed25519" else "rsa", bits)
    try:
        # O_EXCL: never replace a key that may already be published and in use.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        click.echo(f"error: {path} exists; refusing to overwrite a key (choose --out)", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot create {path}: {exc.strerror}", err=True)
        sys.exit(2)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(pem)
    key_path = json.dumps(str(path.resolve()))
    click.echo(f"wrote {kind} private key to {path} (mode 0600: keep it secret)", err=True)
    click.echo("Publish this DNS record:")
    click.echo(f"{dns_record_name(selector, domain)} IN TXT {dns_txt_strings(txt)}")
    click.echo("")
    click.echo("Then add to relay.toml:")
    click.echo("[[domains]]")
    click.echo(f"name = {json.dumps(domain)}")
    click.echo(f"dkim_selector = {json.dumps(selector)}")
    click.echo(f"dkim_key = {key_path}")
    click.echo(
        f"# or, for a domain that already has a key: "
        f"dkim_keys = [{{ selector = {json.dumps(selector)}, key = {key_path} }}]"
    )


main.add_command(db)
main.add_command(jobs)
main.add_command(keys)
main.add_command(reload_command)
main.add_command(webhooks)

if __name__ == "__main__":
    main()

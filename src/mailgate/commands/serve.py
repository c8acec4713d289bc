"""``mailgate serve`` (the relay) and ``mailgate check-config`` (what serve would run with)."""

from __future__ import annotations

import sys

import click

from mailgate.commands.common import config_option, run_or_exit, settings_or_exit
from mailgate.exceptions import ConfigError
from mailgate.logs import setup_logging


@click.command()
@config_option
def serve(config_path: str) -> None:
    """Run the SMTP listeners and the delivery loop until SIGTERM/SIGINT."""
    from mailgate.app import App
    from mailgate.memory import tune_allocator

    settings = settings_or_exit(config_path, runtime=True)
    setup_logging(settings.server.log_level, settings.server.log_format)
    tune_allocator()  # before the listeners allocate: big buffers go back when freed
    app = App(settings)
    try:
        import uvloop
    except ImportError:
        run_or_exit(app.serve())
    else:
        run_or_exit(app.serve(), runner=uvloop.run)


@click.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate relay.toml: exit 0, or print the bad key and exit 2."""
    from mailgate.delivery.dkim import DkimSigner

    s = settings_or_exit(config_path, runtime=True)
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

"""``mailgate domains check`` and ``mailgate dkim keygen``: the sending domains' DNS
records and their DKIM keys."""

from __future__ import annotations

import json
import sys

import click

from mailgate.commands.common import config_option, run_or_exit, settings_or_exit
from mailgate.exceptions import ConfigError


@click.group()
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


@click.group()
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

"""``mailgate send``: queue a message through the accept path, from the command line."""

from __future__ import annotations

import sys

import click

from mailgate.commands.common import config_option, run_or_exit, settings_or_exit, with_store
from mailgate.store import Store


@click.command("send")
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
    from mailgate.models import Credential
    from mailgate.submission.prepare import ApiError, prepare_send
    from mailgate.submission.request import SendRequest

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

"""The ``mailgate`` command: the group its subcommands (mailgate.commands) join."""

from __future__ import annotations

import click

from mailgate import __version__
from mailgate.commands.db import db
from mailgate.commands.domains import dkim, domains
from mailgate.commands.jobs import jobs
from mailgate.commands.keys import keys
from mailgate.commands.queue import queue
from mailgate.commands.reload import reload_command
from mailgate.commands.send import send
from mailgate.commands.serve import check_config, serve
from mailgate.commands.suppressions import suppressions
from mailgate.commands.webhooks import webhooks


@click.group()
@click.version_option(__version__, prog_name="mailgate")
def main() -> None:
    """mailgate: SMTP relay and submission gateway with a durable queue."""


main.add_command(serve)
main.add_command(check_config)
main.add_command(send)
main.add_command(domains)
main.add_command(suppressions)
main.add_command(queue)
main.add_command(dkim)
main.add_command(db)
main.add_command(jobs)
main.add_command(keys)
main.add_command(reload_command)
main.add_command(webhooks)

if __name__ == "__main__":
    main()

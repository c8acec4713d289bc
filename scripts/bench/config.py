"""relay.toml for the ``mailgate serve`` a bench starts: the SMTP bench's (held or
delivering, signing, behind a dead provider, with webhooks), the HTTP bench's and the
memory scenarios'. They share the [server] section and the sink as provider."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from bench import HOST
from bench.webhooks import webhook_toml

DKIM_SELECTOR = "bench"
DKIM_DOMAIN = "example.com"  # the SMTP load's sender and From: domain: every message signed
BREAKER_FAILURES = 5
BREAKER_COOLDOWN = "30s"
DEAD_TIMEOUT = "2s"  # connect/command timeouts of the blackhole provider
DEFAULT_FROM = "bench@example.com"  # [compat] default_from, on the bench's [[domains]]
# The HTTP and memory relays: the one domain, and a short stop.
DOMAIN_AND_DELIVERY = '[[domains]]\nname = "example.com"\n\n[delivery]\nshutdown_grace = "5s"\n\n'


def toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def free_port() -> int:
    """A loopback port free right now (tiny race with other programs; fine for a bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nobody listens on: bound to get a number, then closed again."""
    return free_port()


def server_section(workdir: Path, log_level: str) -> str:
    """[server]: the bench's hostname, data under workdir (its last line; no blank line)."""
    return (
        "[server]\n"
        'hostname = "mailgate.bench.test"\n'
        f"data_dir = {toml_str(workdir / 'data')}\n"
        f'log_level = "{log_level}"\n'
    )


def sink_provider(port: int) -> str:
    """The body of the [[providers]] entry that delivers to the bench's sink."""
    return (
        'name = "sink"\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntls = "none"\nmax_connections = 20\n'
    )


@dataclass(frozen=True)
class DeadProvider:
    """The failing provider in front of the sink: a closed port or a blackhole."""

    port: int
    timeout: str | None = None  # its connect_timeout and command_timeout; None: defaults

    def toml(self) -> str:
        timeouts = (
            f"connect_timeout = {toml_str(self.timeout)}\n"
            f"command_timeout = {toml_str(self.timeout)}\n"
            if self.timeout
            else ""
        )
        return (
            'name = "dead"\nkind = "smtp"\npriority = 10\nhost = "127.0.0.1"\n'
            f'port = {self.port}\ntls = "none"\nmax_connections = 10\n'
            f"breaker_failures = {BREAKER_FAILURES}\n"
            f"breaker_cooldown = {toml_str(BREAKER_COOLDOWN)}\n{timeouts}"
        )


def relay_toml(
    workdir: Path,
    sink_port: int | None,
    log_level: str,
    listen_port: int,
    *,
    http_port: int = 0,
    dkim_key: Path | None = None,
    dead: DeadProvider | None = None,
    webhook_url: str | None = None,
) -> str:
    """The SMTP bench's relay.toml: loopback listener, trusted loopback (no AUTH), SQLite
    under workdir.

    ``sink_port`` None: delivery disabled (a maildir provider satisfies the config).
    ``listen_port`` 0: the kernel picks one and mailgate logs it.
    ``dkim_key``: example.com signs with it (selector "bench").
    ``dead``: a failing provider at priority 10, the sink then at priority 20.
    ``webhook_url``: an endpoint for every event.
    """
    delivery = "true" if sink_port is not None else "false"
    if sink_port is None:
        provider = f'name = "local"\nkind = "maildir"\npath = {toml_str(workdir / "maildir")}\n'
    else:
        provider = sink_provider(sink_port)
    if dead is not None:
        provider = f"{dead.toml()}\n[[providers]]\n{provider}priority = 20\n"
    # HTTP only for /metrics (the event loop lag), on a free port: :8080 could clash.
    http = f'"127.0.0.1:{http_port}"' if http_port else ""
    dkim = ""
    if dkim_key is not None:
        dkim = f'dkim_selector = "{DKIM_SELECTOR}"\ndkim_key = {toml_str(dkim_key)}\n'
    return (
        f"{server_section(workdir, log_level)}\n"
        "[smtp]\n"
        f'listen = ["127.0.0.1:{listen_port}"]\n'
        'trusted_networks = ["127.0.0.0/8"]\n\n'
        f"[http]\nlisten = [{http}]\n\n"
        "[[domains]]\n"
        f'name = "{DKIM_DOMAIN}"\n{dkim}\n'
        "[delivery]\n"
        f"enabled = {delivery}\n"
        'shutdown_grace = "5s"\n\n'
        f"[[providers]]\n{provider}" + (webhook_toml(webhook_url) if webhook_url else "")
    )


def http_relay_toml(
    workdir: Path, sink_port: int, log_level: str, public_url: str = "", *, deliver: bool = True
) -> str:
    """The HTTP bench's: SMTP off, HTTP on a kernel-chosen loopback port, SQLite under
    workdir, the sink as the only provider (delivery runs, as it would in production:
    MessagePipe's send waits for it; not if ``deliver`` is False: mail is only queued),
    and a compat default sender for the dialects' requests, which carry none."""
    delivery = DOMAIN_AND_DELIVERY
    if not deliver:
        delivery = delivery.replace("[delivery]\n", "[delivery]\nenabled = false\n")
    return (
        f"{server_section(workdir, log_level)}\n"
        "[smtp]\n"
        "listen = []\n\n"
        "[http]\n"
        'listen = ["127.0.0.1:0"]\n'
        + (f'public_url = "{public_url}"\n' if public_url else "")
        + "\n"
        + delivery
        + "[compat]\n"
        f'default_from = "{DEFAULT_FROM}"\n\n'
        f"[[providers]]\n{sink_provider(sink_port)}"
    )


def memory_relay_toml(
    workdir: Path, sink_port: int, smtp_port: int, http_port: int, cap: str
) -> str:
    """The memory scenarios': SMTP and HTTP on chosen ports, 30 MB messages, slow sink
    writes allowed, and ``cap`` as max_inflight_bytes when given."""
    inflight = f"max_inflight_bytes = {json.dumps(cap)}\n" if cap else ""
    return (
        f"{server_section(workdir, 'info')}{inflight}\n"
        "[smtp]\n"
        f'listen = ["127.0.0.1:{smtp_port}"]\n'
        'trusted_networks = ["127.0.0.0/8"]\n'
        'max_message_size = "30MB"\n\n'
        f'[http]\nlisten = ["127.0.0.1:{http_port}"]\n\n'
        + DOMAIN_AND_DELIVERY
        + f'[[providers]]\n{sink_provider(sink_port)}data_timeout = "10m"\n'
    )

"""``mailgate serve`` as a child process, for the stories that need signals (reload, JSON
logs): its SMTP and HTTP ports are read from its log."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServeProcess:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = int(self.wait_for(r"SMTP listening on 127\.0\.0\.1:(\d+)"))
        self.http_port = int(self.wait_for(r"HTTP API listening on 127\.0\.0\.1:(\d+)"))

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 30.0) -> str:
        """The first group of the ``count``-th match of ``pattern`` in the log (or "")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.text())
            if len(found) >= count:
                return str(found[count - 1]) if found[count - 1] else ""
            if self.proc.poll() is not None:
                raise AssertionError(f"mailgate serve exited:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log:\n{self.text()}")

    def stop(self) -> None:
        """SIGTERM, and wait for an orderly stop (the log is complete then)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def config_text(data_dir: Path, providers: str, *, server: str = "", extra: str = "") -> str:
    """A test relay.toml: hostname relay.test, SMTP and HTTP on ports the kernel picks,
    the sending domain example.com, then ``providers`` (their [[providers]] tables).
    ``server``: more [server] lines (e.g. node_id); ``extra``: more tables."""
    return f"""
[server]
hostname = "relay.test"
{server}
data_dir = "{data_dir}"
ballast_size = "64KiB"
[smtp]
listen = ["127.0.0.1:0"]
[http]
listen = ["127.0.0.1:0"]
[[domains]]
name = "example.com"
{providers}
{extra}
"""


def smtp_provider(name: str, port: int) -> str:
    """A [[providers]] table for a fake upstream on ``port``, and [retry] kept fast."""
    return f"""
[[providers]]
name = "{name}"
kind = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
[retry]
min_backoff = "200ms"
max_backoff = "1s"
"""


def maildir_provider(name: str, path: Path) -> str:
    return f"""
[[providers]]
name = "{name}"
kind = "maildir"
path = "{path}"
"""


def capture_config(data_dir: Path) -> str:
    """config_text with the maildir capture provider "capture" under ``data_dir``."""
    return config_text(data_dir, maildir_provider("capture", data_dir / "maildir"))


def write_config(tmp_path: Path, upstream_port: int, *, server: str = "", extra: str = "") -> Path:
    """A relay.toml in ``tmp_path`` (see config_text): one smtp provider "up" on the fake
    upstream, fast retries."""
    cfg = tmp_path / "relay.toml"
    providers = smtp_provider("up", upstream_port)
    cfg.write_text(config_text(tmp_path / "data", providers, server=server, extra=extra))
    return cfg

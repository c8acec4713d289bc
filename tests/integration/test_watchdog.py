"""Story: under systemd (Type=notify, WatchdogSec) `mailgate serve` says READY=1 and
pings WATCHDOG=1 from its event loop; a loop that stops turning stops the pings."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes.serve import capture_config
from mailgate import app


def _receive(sock: socket.socket, until: float) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_serve_sends_ready_and_watchdog_pings(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(capture_config(tmp_path / "data"))
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            states: list[str] = []
            deadline = time.monotonic() + 30
            while "READY=1" not in states and time.monotonic() < deadline:
                states += _receive(sock, min(deadline, time.monotonic() + 1))
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert "READY=1" in states
            # 0.4 s watchdog: a ping every 0.2 s, so at least 4 in a second.
            after = _receive(sock, time.monotonic() + 1.0)
            assert after.count("WATCHDOG=1") >= 4, after
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == 0
        assert "STOPPING=1" in _receive(sock, time.monotonic() + 0.5) + states + after


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert app.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert app.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert app.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert app.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert app.watchdog_interval() is None


def test_a_wedged_loop_stops_the_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pings come from the loop, not a thread: while the loop is blocked none goes out
    (so systemd's watchdog fires), and they resume when it turns again."""
    sent: list[float] = []
    monkeypatch.setattr(app, "sd_notify", lambda state: sent.append(time.monotonic()))

    async def run() -> tuple[float, float]:
        task = asyncio.create_task(app.ping_watchdog(0.05))
        await asyncio.sleep(0.3)
        wedged = time.monotonic()
        time.sleep(0.6)  # the loop is stuck
        unwedged = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()
        return wedged, unwedged

    wedged, unwedged = asyncio.run(run())
    assert not [t for t in sent if wedged + 0.01 < t < unwedged]
    assert len([t for t in sent if t < wedged]) >= 4
    assert len([t for t in sent if t >= unwedged]) >= 4

"""Story: the relay process is killed (SIGKILL) or stopped (SIGTERM) under load.

Runs the real ``mailgate serve`` command. Every message that got a 250 must reach the
upstream after a restart; duplicates are allowed (at-least-once) and counted.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes.serve import write_config
from fakes.upstream import Upstream

MSG = "From: app@example.com\r\nTo: {rcpt}\r\nSubject: crash {n}\r\n\r\nmessage {n}\r\n"


class Serve:
    """``mailgate serve`` as a child process; the port is read from its log."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")[self._offset :]
            found = re.findall(r"SMTP listening on 127\.0\.0\.1:(\d+)", text)
            if found and self.proc.poll() is None:
                return int(found[-1])
            if self.proc.poll() is not None:
                raise AssertionError(f"mailgate serve exited: {text}")
            time.sleep(0.05)
        raise AssertionError("mailgate serve did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def test_sigkill_during_submission_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with Upstream() as up:
        config = write_config(tmp_path, up.port)
        log_path = tmp_path / "serve.log"
        serve = Serve(config, log_path)
        acked: dict[str, int] = {}  # queue id -> message number
        lock = threading.Lock()
        counter = iter(range(200))

        def client() -> None:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                try:
                    with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as c:
                        c.ehlo("client.test")
                        c.mail("app@example.com")
                        c.rcpt(f"r{n}@dest.test")
                        code, reply = c.data(MSG.format(rcpt=f"r{n}@dest.test", n=n).encode())
                        if code == 250:
                            qid = reply.decode().rsplit(" ", 1)[1]
                            with lock:
                                acked[qid] = n
                except (smtplib.SMTPException, OSError):
                    pass  # not acknowledged: the client would retry; no promise was made

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        # Kill it while submissions are in full flow.
        deadline = time.monotonic() + 20
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(10)
        for t in threads:
            t.join(30)
        killed_with = len(acked)
        assert 0 < killed_with < 200, "the kill should land mid-load"

        serve2 = Serve(config, log_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if set(acked) <= set(up.by_queue_id()):
                    break
                time.sleep(0.1)
            delivered = up.by_queue_id()
            missing = set(acked) - set(delivered)
            assert not missing, f"{len(missing)} acknowledged messages lost"
            duplicates = sum(c - 1 for c in delivered.values() if c > 1)
            print(f"acked={len(acked)} delivered={len(delivered)} duplicates={duplicates}")
            # At-least-once: a message that was being delivered when the process died
            # (sent upstream, result not yet committed) goes again, once. Nothing more.
            assert max(delivered.values()) <= 2
            assert duplicates <= 200  # [delivery] concurrency: what can be in flight
        finally:
            serve2.close()
            serve.close()


def test_sigterm_stops_cleanly_and_releases_leases(tmp_path: Path) -> None:
    with Upstream() as up:
        up.faults.data_delay = 60  # the upstream hangs: an attempt is in flight at SIGTERM
        config = write_config(tmp_path, up.port)
        text = config.read_text().replace("[retry]", '[delivery]\nshutdown_grace = "1s"\n[retry]')
        config.write_text(text)
        serve = Serve(config, tmp_path / "serve.log")
        try:
            with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as c:
                assert (
                    c.sendmail("app@example.com", ["a@dest.test"], b"Subject: t\r\n\r\nx\r\n") == {}
                )
            deadline = time.monotonic() + 10
            while up.mail_commands == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert up.mail_commands == 1
            started = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            assert serve.proc.wait(30) == 0
            assert time.monotonic() - started < 30
            log = (tmp_path / "serve.log").read_text()
            assert "released 1 leased deliveries" in log
        finally:
            serve.close()
        # Restarted, the relay tries again at once (the lease was released, not left to expire).
        up.faults.data_delay = 0
        serve = Serve(config, tmp_path / "serve.log")
        try:
            up.wait_for(1, timeout=15)
        finally:
            serve.close()


@pytest.mark.parametrize("bad", ["[smtp]\nbogus = 1\n", '[smtp]\nmax_message_size = "lots"\n'])
def test_serve_refuses_a_bad_config(tmp_path: Path, bad: str) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"{cfg}: [smtp]" in proc.stderr


def _serve_listening_on(tmp_path: Path, listen: str) -> subprocess.CompletedProcess[str]:
    """``mailgate serve`` with SMTP on ``listen``: for listeners that cannot start."""
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp_path}/data"\n[smtp]\nlisten = ["{listen}"]\n'
        f'[http]\nlisten = []\n[[domains]]\nname = "example.com"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path}/m"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_reports_a_port_in_use_without_a_traceback(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        proc = _serve_listening_on(tmp_path, f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert proc.returncode == 1
    assert (
        f"error: cannot listen for SMTP on 127.0.0.1:{port}: Address already in use" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_a_listen_host_that_does_not_resolve_is_named(tmp_path: Path) -> None:
    """It said "Unknown error -2" (getaddrinfo's code read as an errno)."""
    proc = _serve_listening_on(tmp_path, "no.such.host.invalid:2625")
    assert proc.returncode == 1
    assert "cannot listen for SMTP on no.such.host.invalid:2625: cannot resolve its host" in (
        proc.stderr
    ), proc.stderr
    assert "Unknown error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_stopping_relay_starts_no_new_transaction_and_finishes_the_one_in_data(
    relay_factory,  # type: ignore[no-untyped-def]
) -> None:
    """While SMTP stops (SIGTERM), a message in DATA finishes with its 250; a new MAIL,
    or a DATA not yet begun, gets 421 4.3.2 (under load the stop waited its whole grace,
    acknowledging new transactions all along)."""
    import asyncio

    relay = relay_factory()

    def session() -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", relay.port(), timeout=10)
        client.ehlo("client.test")
        return client

    busy, fresh, before_data = session(), session(), session()
    assert busy.mail("app@example.com")[0] == 250 and busy.rcpt("a@dest.test")[0] == 250
    busy.putcmd("data")
    assert busy.getreply()[0] == 354
    busy.send(b"Subject: in data\r\n\r\nfirst half\r\n")
    assert before_data.mail("app@example.com")[0] == 250
    assert before_data.rcpt("b@dest.test")[0] == 250
    assert relay.app.smtp is not None
    stopping = asyncio.run_coroutine_threadsafe(relay.app.smtp.stop(grace=10), relay.loop)
    deadline = time.monotonic() + 5
    while not relay.app.smtp.connections.stopping:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code, text = fresh.mail("app@example.com")
    assert (code, text[:5]) == (421, b"4.3.2"), text
    with pytest.raises(smtplib.SMTPDataError) as refused:
        before_data.data(b"Subject: late\r\n\r\nx\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (421, b"4.3.2")
    busy.send(b"second half\r\n.\r\n")
    code, text = busy.getreply()
    assert code == 250, text
    stopping.result(10)
    for client in (busy, fresh, before_data):
        client.close()

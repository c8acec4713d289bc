"""Story: an operator changes relay.toml and reloads (``mailgate reload``, SIGHUP) while
clients stay connected.

Runs the real ``mailgate serve``. Twenty SMTP sessions and a kept-alive HTTP connection
opened before the reload go on working after it; the new sender domain is accepted at
once and the new provider receives the mail its route sends it; an attempt in flight
during the reload is delivered once. A bad file is refused, naming the key, and the
running settings stay; a changed listener is logged as needing a restart.
"""

from __future__ import annotations

import http.client
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from fakes import serve
from fakes.serve import ServeProcess
from fakes.upstream import Upstream

SESSIONS = 20


def config_text(tmp_path: Path, first: int, second: int | None = None, extra: str = "") -> str:
    text = serve.config_text(tmp_path / "data", serve.smtp_provider("first", first))
    if second is not None:
        text += f"""
[[domains]]
name = "new.example"
[[providers]]
name = "second"
kind = "smtp"
priority = 20  # after "first": it gets only what its route sends it
host = "127.0.0.1"
port = {second}
tls = "none"
[[routes]]
recipient_domains = ["other.test"]
providers = ["second"]
"""
    return text + extra


def message(sender: str, rcpt: str, n: int) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: reload {n}\r\n\r\nbody {n}\r\n".encode()


def reload_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "reload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


def test_reload_adds_a_domain_and_a_provider_under_open_sessions(tmp_path: Path) -> None:
    with Upstream() as first, Upstream() as second:
        config = tmp_path / "relay.toml"
        config.write_text(config_text(tmp_path, first.port))
        serve = ServeProcess(config, tmp_path / "serve.log")
        try:
            sessions = []
            for _ in range(SESSIONS):
                c = smtplib.SMTP("127.0.0.1", serve.port, timeout=30)
                c.ehlo("client.test")
                sessions.append(c)
            for n, c in enumerate(sessions):
                rcpt = f"r{n}@dest.test"
                assert (
                    c.sendmail("app@example.com", [rcpt], message("app@example.com", rcpt, n)) == {}
                )
            first.wait_for(SESSIONS, timeout=30)
            # Before the reload the new domain is refused.
            code, reply = sessions[0].mail("app@new.example")
            assert code == 553, reply
            sessions[0].rset()
            web = http.client.HTTPConnection("127.0.0.1", serve.http_port, timeout=10)
            web.request("GET", "/healthz")
            assert web.getresponse().read() is not None

            # An attempt in flight while the delivery process is replaced: it finishes.
            first.faults.data_delay = 2.0
            sessions[0].sendmail(
                "app@example.com", ["slow@dest.test"], message("app@example.com", "slow", 99)
            )
            time.sleep(0.5)
            config.write_text(config_text(tmp_path, first.port, second.port))
            done = reload_cli(config)
            assert done.returncode == 0, done.stderr
            assert f"reloaded by mailgate serve (pid {serve.proc.pid})" in done.stdout
            serve.wait_for(r"(reloaded) ")
            first.faults.data_delay = 0.0

            # Every session opened before the reload still works, with the new settings.
            for n, c in enumerate(sessions):
                assert c.noop()[0] == 250
                refused = c.sendmail(
                    "app@new.example", [f"n{n}@dest.test"], message("app@new.example", "x", n)
                )
                assert refused == {}
                refused = c.sendmail(
                    "app@example.com", [f"o{n}@other.test"], message("app@example.com", "y", n)
                )
                assert refused == {}
            got = second.wait_for(SESSIONS, timeout=30)
            assert {r.rcpt_tos[0] for r in got} == {f"o{n}@other.test" for n in range(SESSIONS)}
            first.wait_for(2 * SESSIONS + 1, timeout=30)
            slow = [r for r in first.received if r.rcpt_tos == ["slow@dest.test"]]
            assert len(slow) == 1
            # The result line is logged once recorded (log lines go out in batches).
            serve.wait_for(r"slow@dest\.test> (status=sent)")
            for c in sessions:
                c.quit()
            # The HTTP connection kept alive across the reload answers on it.
            web.request("GET", "/healthz")
            assert web.getresponse().status == 200
            web.close()
            assert "SMTP session error" not in serve.text()
        finally:
            serve.close()


def test_a_bad_file_is_refused_and_the_running_settings_stay(tmp_path: Path) -> None:
    with Upstream() as first, Upstream() as second:
        config = tmp_path / "relay.toml"
        config.write_text(config_text(tmp_path, first.port, second.port))
        serve = ServeProcess(config, tmp_path / "serve.log")
        try:
            c = smtplib.SMTP("127.0.0.1", serve.port, timeout=30)
            c.ehlo("client.test")
            # A bad value: the command says which key and does not signal the serve.
            config.write_text(
                config_text(tmp_path, first.port, extra="[delivery]\nconcurrency = 0\n")
            )
            done = reload_cli(config)
            assert done.returncode == 2
            assert "[delivery] concurrency" in done.stderr
            # Another file of the same data_dir: valid, but the serve would read its own.
            other = tmp_path / "other.toml"
            other.write_text(config_text(tmp_path, first.port, second.port))
            done = reload_cli(other)
            assert done.returncode == 2 and f"reads {config}, not {other}" in done.stderr
            assert "reload" not in serve.text().split("listening", 1)[1]  # not signalled
            # Told directly (SIGHUP, as systemd's ExecReload does), the serve refuses it too.
            os.kill(serve.proc.pid, signal.SIGHUP)
            line = serve.wait_for(r"(reload refused, the running settings stay: .*)")
            assert "[delivery] concurrency" in line
            # The old settings run on: new.example and the second provider are still there.
            assert (
                c.sendmail("a@new.example", ["z@other.test"], message("a@new.example", "z", 1))
                == {}
            )
            second.wait_for(1, timeout=30)

            # A listener change is reported as needing a restart; the rest applies.
            text = config_text(tmp_path, first.port).replace(
                'listen = ["127.0.0.1:0"]\n[http]',
                'listen = ["127.0.0.1:0", "127.0.0.1:0"]\n[http]',
            )
            config.write_text(text)
            os.kill(serve.proc.pid, signal.SIGHUP)
            serve.wait_for(r"(reloaded) ")
            assert "[smtp] listen changed: needs a restart" in serve.text()
            code, reply = c.mail("a@new.example")  # the domain is gone now
            assert code == 553, reply
            c.rset()
            assert (
                c.sendmail("a@example.com", ["q@dest.test"], message("a@example.com", "q", 2)) == {}
            )
            first.wait_for(1, timeout=30)
            c.quit()
            # A file the command finds good and the serve refuses (here: a password_env
            # set in the operator's shell, not in the serve's environment): the command
            # says so and exits 1 (it printed "ok" whatever the serve did).
            config.write_text(
                config_text(tmp_path, first.port).replace(
                    'tls = "none"\n', 'tls = "none"\npassword_env = "MAILGATE_TEST_RELOAD_PW"\n', 1
                )
            )
            assert "MAILGATE_TEST_RELOAD_PW" in config.read_text()
            done = subprocess.run(
                [sys.executable, "-m", "mailgate.cli", "reload", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "MAILGATE_TEST_RELOAD_PW": "only-here"},
            )
            assert done.returncode == 1, (done.stdout, done.stderr)
            assert "refused the reload" in done.stderr and "MAILGATE_TEST_RELOAD_PW" in done.stderr
        finally:
            serve.close()


def test_reload_of_a_serve_that_does_not_answer(tmp_path: Path) -> None:
    """A serve of the release before (its lock file has no "answers" line, and it writes
    no outcome) is signalled and not waited for: the command waited 30 s and exited 1
    although the reload had been applied."""
    import fcntl

    config = tmp_path / "relay.toml"
    config.write_text(config_text(tmp_path, 9))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    stand_in = subprocess.Popen(["sleep", "60"])  # the "serve" that gets the SIGHUP
    try:
        with open(data / "mailgate.lock", "w") as lock:
            lock.write(f"{stand_in.pid}\n{config}\n")
            lock.flush()
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            started = time.monotonic()
            done = reload_cli(config)
            assert time.monotonic() - started < 20
        assert done.returncode == 0, done.stderr
        assert f"sent SIGHUP to mailgate serve (pid {stand_in.pid})" in done.stdout
        assert stand_in.wait(timeout=10) == -signal.SIGHUP
    finally:
        stand_in.kill()

"""Story: an operator uses the ``mailgate`` command: config check, keys, queue inspection."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from fakes.serve import capture_config
from mailgate.cli import main


def config(tmp_path: Path) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(capture_config(tmp_path / "data"))
    return str(path)


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    runner = CliRunner()
    good = config(tmp_path)
    result = runner.invoke(main, ["check-config", "--config", good])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(good).read_text().replace('kind = "maildir"', 'kind = "carrier-pigeon"'))
    result = runner.invoke(main, ["check-config", "--config", str(bad)])
    assert result.exit_code == 2
    assert f'{bad}: [[providers]] #1 (name = "capture") kind:' in result.output
    result = runner.invoke(main, ["check-config", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_env_override_is_validated(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["check-config", "--config", config(tmp_path)],
        env={"MAILGATE_SMTP_MAX_RECIPIENTS": "many"},
    )
    assert result.exit_code == 2 and "[smtp] max_recipients" in result.output


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "keys", "create", "--name", "web", "--config", cfg],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = proc.stdout.strip().splitlines()[-1]
    assert key.startswith("mg_") and " " not in key
    runner = CliRunner()
    listed = runner.invoke(main, ["keys", "list", "--config", cfg])
    assert listed.exit_code == 0 and "web" in listed.output and "active" in listed.output
    assert key not in listed.output
    dup = runner.invoke(main, ["keys", "create", "--name", "web", "--config", cfg])
    assert dup.exit_code == 2 and "already exists" in dup.output
    assert runner.invoke(main, ["keys", "revoke", "web", "--config", cfg]).exit_code == 0
    listed = runner.invoke(main, ["keys", "list", "--config", cfg])
    assert "revoked" in listed.output
    assert runner.invoke(main, ["keys", "revoke", "web", "--config", cfg]).exit_code == 1
    bad = runner.invoke(
        main, ["keys", "create", "--name", "x", "--domain", "evil.test", "--config", cfg]
    )
    assert bad.exit_code == 2 and "evil.test" in bad.output


def test_queue_list_and_show(tmp_path: Path, relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.sendmail(
            "app@example.com", ["a@dest.test", "b@dest.test"], b"Subject: Hi there\r\n\r\nx\r\n"
        )
    qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    # The CLI reads the same database while the relay runs.
    cfg = tmp_path / "cli.toml"
    cfg.write_text(capture_config(tmp_path / "data"))
    runner = CliRunner()
    listed = runner.invoke(main, ["queue", "list", "--config", str(cfg)])
    assert listed.exit_code == 0, listed.output
    assert qid in listed.output and "sent:2" in listed.output
    for status, shown_too in (("SENT", True), ("queued", False)):
        listed = runner.invoke(main, ["queue", "list", "--status", status, "--config", str(cfg)])
        assert listed.exit_code == 0 and (qid in listed.output) is shown_too, listed.output
    # A status that does not exist is an error, not an empty list.
    listed = runner.invoke(main, ["queue", "list", "--status", "pending", "--config", str(cfg)])
    assert listed.exit_code == 2 and "'pending' is not one of" in listed.output
    shown = runner.invoke(main, ["queue", "show", qid, "--config", str(cfg)])
    assert shown.exit_code == 0, shown.output
    assert "subject:    Hi there" in shown.output
    assert "a@dest.test: sent after 1 attempt(s)" in shown.output
    assert "last response: 250 2.0.0 saved as" in shown.output
    assert shown.output.count(" queued ") == 2
    missing = runner.invoke(main, ["queue", "show", "nope", "--config", str(cfg)])
    assert missing.exit_code == 1


def test_relay_toml_example_is_valid(tmp_path: Path, tls_files) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).parents[2] / "relay.toml.example"
    result = CliRunner().invoke(
        main,
        ["check-config", "--config", str(example)],
        env={
            "MAILGATE_SMTP_TLS_CERT": tls_files["cert"],
            "MAILGATE_SMTP_TLS_KEY": tls_files["key"],
            "MAILGATE_SERVER_DATA_DIR": str(tmp_path),
            "MAILGATE_PRIMARY_PASSWORD": "s3cret",  # its provider's password_env
        },
    )
    assert result.exit_code == 0, result.output
    assert "provider:           primary (smtp, priority 10)" in result.output


def test_send_command_queues_through_accept(tmp_path: Path, relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    cfg = tmp_path / "cli.toml"
    cfg.write_text(capture_config(tmp_path / "data"))
    attachment = tmp_path / "report.txt"
    attachment.write_text("numbers")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "send",
            "--config",
            str(cfg),
            "--from",
            "Ops <ops@example.com>",
            "--to",
            "a@dest.test",
            "--subject",
            "smoke",
            "--text",
            "hello",
            "--header",
            "X-Test: 1",
            "--attach",
            str(attachment),
        ],
    )
    assert result.exit_code == 0, result.output
    qid = result.output.strip().splitlines()[-1]
    # The running relay finds it without being told (its idle re-check).
    statuses = relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"}, timeout=15)
    assert statuses == {"a@dest.test": "sent"}
    refused = runner.invoke(
        main,
        [
            "send",
            "--config",
            str(cfg),
            "--from",
            "x@gmail.com",
            "--to",
            "a@dest.test",
            "--subject",
            "s",
            "--text",
            "t",
        ],
    )
    assert refused.exit_code == 2 and "domain_not_verified" in refused.output


def test_the_development_config_of_scripts_serve_is_valid(tmp_path: Path) -> None:
    script = (Path(__file__).parents[2] / "scripts" / "serve").read_text()
    dev_config = script.split("<<'TOML'\n", 1)[1].split("\nTOML\n", 1)[0]
    cfg = tmp_path / "relay.toml"
    cfg.write_text(dev_config)
    result = CliRunner().invoke(main, ["check-config", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "smtp listen:        127.0.0.1:2525" in result.output
    assert "http listen:        http://127.0.0.1:8080" in result.output


def test_queue_retry_hold_release_delete(tmp_path: Path, relay_factory) -> None:  # type: ignore[no-untyped-def]
    """An operator unsticks mail: the provider is down and retries are an hour apart;
    `queue retry` makes the running relay try again at once, `hold` stops attempts,
    `release` resumes them, `delete` cancels."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nobody listens here once the socket is closed
    relay = relay_factory(
        providers=[
            {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": closed, "tls": "none"}
        ],
        retry={"min_backoff": "1h", "max_backoff": "2h", "jitter": 0},
    )
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.sendmail("app@example.com", ["a@dest.test", "b@other.test"], b"Subject: s\r\n\r\nx\r\n")
    qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
    relay.wait_status(qid, lambda s: set(s.values()) == {"deferred"})
    cfg = tmp_path / "cli.toml"
    cfg.write_text(capture_config(tmp_path / "data"))
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, ["queue", *args, "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        return result.output

    def attempts() -> dict[str, int]:
        msg = relay.call(relay.store.get_message(qid))
        return {d["recipient"]: d["attempts"] for d in msg["deliveries"]}

    assert runner.invoke(main, ["queue", "retry", "--config", str(cfg)]).exit_code == 2
    typo = runner.invoke(main, ["queue", "hold", qid, qid[:-1] + "x", "--config", str(cfg)])
    assert typo.exit_code == 1 and f"no message {qid[:-1]}x" in typo.output, typo.output
    assert "retry: 1 deliveries of 1 messages" in cli("retry", "--to", "dest.test")
    deadline = time.monotonic() + 15
    while attempts()["a@dest.test"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert attempts() == {"a@dest.test": 2, "b@other.test": 1}

    assert "hold: 2 deliveries of 1 messages" in cli("hold", qid)
    relay.wait_status(qid, lambda s: set(s.values()) == {"held"})
    assert "a@dest.test: held" in cli("show", qid)
    assert "retry: 0 deliveries" in cli("retry", "--all")  # held mail is not retried
    assert "release: 1 deliveries" in cli("release", "--to", "b@other.test")
    deadline = time.monotonic() + 15
    while attempts()["b@other.test"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert attempts()["b@other.test"] == 2

    assert "delete: 2 deliveries of 1 messages" in cli("delete", "--from", "example.com")
    relay.wait_status(qid, lambda s: set(s.values()) == {"cancelled"})
    shown = cli("show", qid)
    assert "held" in shown and "released" in shown and "cancelled" in shown

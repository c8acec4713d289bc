"""Story: deliveries run in a child process; the relay survives its death and leaves no
orphans (delivery, signing, webhook or queue writer process) behind when it dies itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from test_delivery_upstream import smtp_provider, submit

from fakes.upstream import Upstream
from mailgate.delivery.process import SIGNING_PROCESSES


def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_attempts_run_in_a_niced_child_process(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = relay_factory(providers=smtp_provider(up.port))
        pid = relay.app.delivery.pids()[0]
        child = psutil.Process(pid)
        assert child.ppid() == os.getpid()  # the relay (here: this test process) started it
        assert child.nice() >= 5
        qid = submit(relay, ["a@dest.test"])
        relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
        assert up.wait_for(1)[0].queue_id == qid


def test_a_killed_delivery_process_defers_its_attempt_and_another_takes_over(
    relay_factory,
) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        up.faults.data_delay = 30.0  # the attempt hangs after DATA until the kill
        relay = relay_factory(providers=smtp_provider(up.port, data_timeout=60))
        first = submit(relay, ["a@dest.test"])
        _wait(lambda: up.mail_commands == 1)
        (pid,) = relay.app.delivery.pids()
        os.kill(pid, signal.SIGKILL)
        # Whether that message went out is unknown: deferred for another attempt, not lost.
        statuses = relay.wait_status(first, lambda s: s == {"a@dest.test": "deferred"})
        assert statuses == {"a@dest.test": "deferred"}
        deferred = [e for e in relay.events(first) if e["type"] == "deferred"]
        assert "delivery interrupted" in deferred[-1]["response"]
        # A new delivery process starts, and new mail goes out through it.
        _wait(lambda: relay.app.delivery.pids() != [pid] and _alive(relay.app.delivery.pids()[0]))
        up.faults.data_delay = 0.0
        second = submit(relay, ["b@dest.test"])
        relay.wait_status(second, lambda s: s == {"b@dest.test": "sent"})


def test_children_exit_when_the_relay_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives the relay no chance to stop its queue writer, delivery and webhook
    processes (nor the delivery process's DKIM signing processes): they see end of file on
    their stdin and exit by themselves. Outside systemd nothing else would stop them."""
    key = tmp_path / "rsa.pem"
    subprocess.run(
        [
            *(sys.executable, "-m", "mailgate.cli", "dkim", "keygen"),
            *("--domain", "example.com", "--selector", "s1", "--out", str(key)),
        ],
        check=True,
        capture_output=True,
    )
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp_path}/data"\n[smtp]\nlisten = ["127.0.0.1:0"]\n'
        f'[http]\nlisten = []\n[[domains]]\nname = "example.com"\ndkim_selector = "s1"\n'
        f'dkim_key = "{key}"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path}/m"\n'
        # An endpoint: the webhook process starts (nothing needs to answer there).
        f"[webhooks]\nallow_private = true\n[[webhooks.endpoints]]\n"
        f'url = "http://127.0.0.1:9/hooks"\nsecret = "whsec_{"A" * 32}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "SMTP listening on" in line:
                break
        # The queue writer, the webhook process, the delivery process and its signing
        # processes (none on 2 cores; ready before the relay's READY).
        expected = 3 + SIGNING_PROCESSES

        def commands() -> list[str]:  # a child between its fork and its exec has none yet
            return [" ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(True)]

        _wait(lambda: len(commands()) == expected and all(commands()))
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("mailgate.events.webhook_process" in c for c in commands()), commands()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c.pid) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c.pid) for c in children)


def _children(module: str) -> list[int]:
    return [
        p.pid
        for p in psutil.Process().children()
        if module in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
    ]


def test_the_delivery_process_starts_before_the_store_opens_and_is_greeted_after(
    tmp_path: Path,
) -> None:
    """App.start execs the delivery process first (it loads its modules while the store
    opens) and greets that same process once the tracking key is read; one that is never
    greeted ends when closed."""
    import asyncio

    from conftest import build_settings
    from mailgate.delivery.process import DeliveryProcess

    async def main() -> None:
        settings = build_settings(tmp_path)
        # Another test's relay in this worker may still be ending its own: not counted.
        others = set(_children("mailgate.delivery.process"))
        greeted = DeliveryProcess(settings)
        await greeted.prestart()
        (early,) = set(_children("mailgate.delivery.process")) - others
        greeted.set_tracking_key(b"k" * 32)
        await greeted.start()
        assert greeted.pids() == [early]  # the process started early, not a second one
        assert [p["name"] for p in await greeted.provider_status()] == ["capture"]
        await greeted.close()

        others = set(_children("mailgate.delivery.process"))
        never = DeliveryProcess(settings)
        await never.prestart()
        (pid,) = set(_children("mailgate.delivery.process")) - others
        await never.close()
        assert not _alive(pid)

    asyncio.run(main())


def test_children_not_greeted_exit_quietly() -> None:
    """End of file before the hello (the relay's start failed after starting them): exit 0
    without a traceback."""
    for module in ("mailgate.delivery.process", "mailgate.store.writer_process"):
        done = subprocess.run(
            [sys.executable, "-m", module], input=b"", capture_output=True, timeout=60
        )
        assert (done.returncode, done.stderr) == (0, b""), (module, done.stderr[-500:])

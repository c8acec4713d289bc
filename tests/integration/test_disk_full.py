"""Story: the relay's data directory is on a small file system that fills up. New mail is
refused with 452 4.3.1 / HTTP 507 (native and compat shapes) below [server] min_free_space;
every acknowledged message is still delivered once the upstream is back; retention frees
the bodies of delivered mail and accepting resumes by itself. A database that reports its
disk full answers the same, and works again once there is room, without a restart."""

from __future__ import annotations

import contextlib
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fakes.upstream import Upstream
from mailgate.exceptions import InsufficientStorage
from mailgate.store import Store

BODY = b"x" * 76 + b"\r\n"
MESSAGE = (
    b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: fill\r\n\r\n" + BODY * 3400
)  # about 265 KB


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` for the test's duration (the tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {path} (the test needs root): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _send_and_id(port: int) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        code, text = client.mail("app@example.com")
        if code != 250:
            return code, text.decode()
        client.rcpt("a@dest.test")
        code, text = client.data(MESSAGE)
        return code, text.decode()


def test_full_disk_refuses_new_mail_drains_and_resumes(
    relay_factory: Callable[..., object], tmp_path: Path
) -> None:
    with small_fs(tmp_path / "fs", "48m") as fs, Upstream() as up:
        up.stop_listening()  # delivery is held: the queue only grows
        relay = relay_factory(
            server={"data_dir": str(fs / "data"), "min_free_space": "20MB"},
            smtp={"max_message_size": "1MB"},
            compat={"default_from": "app@example.com"},
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ],
        )
        port = relay.port()  # type: ignore[attr-defined]
        acked: list[str] = []
        refusal = (0, "")
        for _ in range(400):
            code, text = _send_and_id(port)
            if code != 250:
                refusal = (code, text)
                break
            acked.append(text.rsplit(" ", 1)[1])
        assert refusal[0] == 452 and refusal[1].startswith("4.3.1 Insufficient system storage"), (
            refusal
        )
        assert len(acked) >= 20, len(acked)

        # At MAIL too, before the client sends the data.
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            code, text = client.ehlo()
            code, text = client.mail("app@example.com")
            assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        # The HTTP API, native and a compatibility dialect: 507 in their own shapes.
        key = relay.create_key("app")  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {key}"}
        base = relay.http_url  # type: ignore[attr-defined]
        r = httpx.post(
            base + "/v1/messages/send",
            json={"from": "app@example.com", "to": "a@dest.test", "subject": "s", "text": "t"},
            headers=headers,
        )
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
        assert r.headers["retry-after"]
        r = httpx.post(
            base + "/api/v1/emails/send",
            json={"recipient": {"email": "a@dest.test"}, "subject": "s", "body": "t"},
            headers=headers,
        )
        assert r.status_code == 507 and r.json()["code"] == "insufficient_storage", r.text
        metrics = httpx.get(base + "/metrics").text
        assert "mailgate_free_space_bytes " in metrics
        assert 'mailgate_insufficient_storage_refusals_total{source="smtp"}' in metrics
        assert 'mailgate_insufficient_storage_refusals_total{source="http"}' in metrics

        # The upstream comes back: every acknowledged message goes out, none lost.
        up.start_listening()
        up.wait_for(len(acked), timeout=90)
        got = up.by_queue_id()
        assert set(acked) <= set(got), set(acked) - set(got)
        with up.lock:
            assert all(len(r.data) > len(MESSAGE) for r in up.received)

        # Retention empties the delivered bodies below the reserve: accepting resumes.
        deadline = time.monotonic() + 60
        code, text = 0, ""
        while time.monotonic() < deadline:
            code, text = _send_and_id(port)
            if code == 250:
                break
            assert code == 452, (code, text)
            time.sleep(0.5)
        assert code == 250, (code, text)
        first = relay.message(acked[0])  # type: ignore[attr-defined]
        assert first["status"] == "sent"


def test_a_full_database_refuses_and_recovers_without_restart(tmp_path: Path) -> None:
    """Below the store, with no reserve: the commit that finds the disk full is
    InsufficientStorage (accept's 452 / 507, as above), every later one too, and once space
    is freed claims and accepts work again on the same writer (no wedge, no restart)."""
    import asyncio

    from mailgate.models import NewMessage

    def message(i: int) -> NewMessage:
        return NewMessage(
            id=f"m{i:06d}",
            created_at=time.time(),
            sender="app@example.com",
            recipients=("a@dest.test",),
            raw=MESSAGE,
            subject="fill",
            message_id_header=f"<m{i}@t>",
            source="smtp",
        )

    async def scenario(fs: Path) -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{fs / 'mailgate.db'}", writer_process=True)
        ballast = fs / "ballast"
        try:
            # Another process holds 3 MB of the file system; the queue fills the rest.
            ballast.write_bytes(b"\0" * 3_000_000)
            committed = 0
            with pytest.raises(InsufficientStorage):
                for i in range(1000):
                    await store.enqueue([message(i)])
                    committed += 1
            assert committed > 5
            with pytest.raises(InsufficientStorage):  # still full: the same answer, at once
                await store.enqueue([message(5000)])
            ballast.unlink()  # the operator frees space: no restart needed
            claimed = await store.claim("n:1", time.time(), 1000, time.time() + 60)
            assert len(claimed) == committed
            await store.enqueue([message(6000)])
        finally:
            await store.close()

    with small_fs(tmp_path / "fs", "8m") as fs:
        asyncio.run(scenario(fs))

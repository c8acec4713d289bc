"""Story: the relay's data directory is on a small file system that fills up. New mail is
refused with 452 4.3.1 / HTTP 507 (native and compat shapes) below [server] min_free_space;
every acknowledged message is still delivered once the upstream is back; retention frees
the bodies of delivered mail and accepting resumes by itself. A database that reports its
disk full answers the same, and works again once there is room, without a restart. When
something else takes the last byte, the reserve's ballast lets the queue drain anyway."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import smtplib
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fakes.upstream import Upstream
from mailgate.ballast import Ballast, ballast_path
from mailgate.exceptions import InsufficientStorage
from mailgate.models import NewMessage
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


def _provider(port: int) -> dict[str, object]:
    """The fake upstream, its circuit breaker closing again a second after it opened."""
    return {
        "name": "up",
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "breaker_cooldown": "1s",
    }


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
    # A tight reserve on purpose: with 12 MB on 40 MB, the WAL of the drain and the purge
    # used to take the reserve, and claims, results and purges all failed for good (the
    # relay stayed at 452) until the ballast and the writer's checkpoint on a full disk.
    with small_fs(tmp_path / "fs", "40m") as fs, Upstream() as up:
        up.stop_listening()  # delivery is held: the queue only grows
        relay = relay_factory(
            server={
                "data_dir": str(fs / "data"),
                "min_free_space": "12MB",
                "ballast_size": "16MiB",
            },
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
        # Not ready: a load balancer sends new mail to another node meanwhile.
        r = httpx.get(base + "/readyz")
        assert (r.status_code, r.json()) == (503, {"status": "insufficient_storage"})
        assert httpx.get(base + "/healthz").status_code == 200
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
        # Ready again too (near the reserve it may flap while retention frees the rest).
        _wait(lambda: httpx.get(base + "/readyz").json() == {"status": "ready"}, "ready", 30)
        # Accepting again means the ballast is whole again too (if the drain needed it).
        assert (fs / "data" / "mailgate.db-reserve").stat().st_size == 16 * 1024**2
        first = relay.message(acked[0])  # type: ignore[attr-defined]
        assert first["status"] == "sent"


def _fill(path: Path) -> int:
    """Write ``path`` until the file system has not one byte left (another program filling
    the disk); the bytes written."""
    written = 0
    chunk = 1 << 20
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while chunk:
            try:
                written += os.write(fd, b"\xff" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _wait(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.1)


def test_something_else_takes_the_last_byte_and_the_queue_still_drains(
    relay_factory: Callable[..., object], tmp_path: Path
) -> None:
    """Not the relay but another program fills the file system, to the last byte, while
    mail is queued and the upstream is down. Once the upstream is back the queue drains
    anyway (its writes go into the ballast's space), delivered bodies are purged, and once
    the program's file is deleted accepting resumes without a restart."""
    with small_fs(tmp_path / "fs", "40m") as fs, Upstream() as up:
        up.stop_listening()
        data = fs / "data"
        relay = relay_factory(
            server={"data_dir": str(data), "min_free_space": "12MB", "ballast_size": "16MiB"},
            smtp={"max_message_size": "1MB"},
            providers=[_provider(up.port)],
        )
        ballast = data / "mailgate.db-reserve"
        size = 16 * 1024**2  # the default's least, a WAL of journal_size_limit
        _wait(lambda: ballast.exists() and ballast.stat().st_size == size, "made")
        port = relay.port()  # type: ignore[attr-defined]
        acked = []
        for _ in range(12):
            code, text = _send_and_id(port)
            assert code == 250, (code, text)
            acked.append(text.rsplit(" ", 1)[1])
        for i in acked:  # attempts failed, and their results were written
            relay.wait_status(i, lambda s: s["a@dest.test"] == "deferred")  # type: ignore[attr-defined]

        filler = fs / "filler"
        _fill(filler)
        assert os.statvfs(fs).f_bavail == 0
        # Refused once the relay looks (statvfs, at most a second old) or its database
        # says the disk is full; what was accepted until then is acknowledged mail too.
        while (sent := _send_and_id(port))[0] == 250:
            acked.append(sent[1].rsplit(" ", 1)[1])
        assert sent[0] == 452, sent

        up.start_listening()  # the filler stays
        up.wait_for(len(acked), timeout=20)
        assert set(acked) <= set(up.by_queue_id())
        assert not ballast.exists()  # given back so that the drain could commit
        db = sqlite3.connect(data / "mailgate.db", timeout=10)
        try:
            purged = "SELECT id FROM messages WHERE purged_at IS NOT NULL AND length(raw) = 0"
            _wait(lambda: {r[0] for r in db.execute(purged)} >= set(acked), "purged")
        finally:
            db.close()
        assert all(relay.message(i)["status"] == "sent" for i in acked)  # type: ignore[attr-defined]

        filler.unlink()  # the operator frees the disk: accepting resumes by itself
        _wait(lambda: _send_and_id(port)[0] == 250, "accepting again")
        _wait(lambda: ballast.exists() and ballast.stat().st_size == size, "made again")
        metrics = httpx.get(relay.http_url + "/metrics").text  # type: ignore[attr-defined]
        (held,) = [
            x for x in metrics.splitlines() if x.startswith("mailgate_reserve_ballast_bytes ")
        ]
        assert float(held.split()[1]) == size, held


def _message(i: int) -> NewMessage:
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


def test_a_full_database_refuses_and_recovers_without_restart(tmp_path: Path) -> None:
    """Below the store, with no reserve: the commit that finds the disk full is
    InsufficientStorage (accept's 452 / 507, as above), every later one too, and once space
    is freed claims and accepts work again on the same writer (no wedge, no restart)."""

    async def scenario(fs: Path) -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{fs / 'mailgate.db'}", writer_process=True)
        other = fs / "other"
        try:
            # Another process holds 3 MB of the file system; the queue fills the rest.
            other.write_bytes(b"\0" * 3_000_000)
            committed = 0
            with pytest.raises(InsufficientStorage):
                for i in range(1000):
                    await store.enqueue([_message(i)])
                    committed += 1
            assert committed > 5
            with pytest.raises(InsufficientStorage):  # still full: the same answer, at once
                await store.enqueue([_message(5000)])
            other.unlink()  # the operator frees space: no restart needed
            claimed = await store.claim("n:1", time.time(), 1000, time.time() + 60)
            assert len(claimed) == committed
            await store.enqueue([_message(6000)])
        finally:
            await store.close()

    with small_fs(tmp_path / "fs", "8m") as fs:
        asyncio.run(scenario(fs))


def test_new_mail_leaves_the_ballast_to_the_drain(tmp_path: Path) -> None:
    """Below the store, the disk full to the last byte: new mail commits into what room the
    WAL's file still has, then is refused, and the ballast stays whole; the first claim
    finds the disk full too, releases the ballast and commits, and so do the writes after
    it (no wedge). New mail is refused until the ballast is made again."""

    async def scenario(fs: Path) -> None:
        db = fs / "mailgate.db"
        ballast = Ballast(ballast_path(db), 4 * 1024**2)
        store = await Store.open(f"sqlite+aiosqlite:///{db}", writer_process=True)
        try:
            for i in range(8):
                await store.enqueue([_message(i)])
            assert ballast.make()
            _fill(fs / "other")
            committed, refused = 8, 0
            for i in range(100, 200):
                try:
                    await store.enqueue([_message(i)])
                    committed += 1
                except InsufficientStorage:
                    refused += 1
                    if refused == 3:
                        break
            assert refused == 3 and ballast.held() == 4 * 1024**2
            claimed = await store.claim("n:1", time.time(), 1000, time.time() + 60)
            assert len(claimed) == committed
            assert ballast.held() == 0  # given up for the claim
            assert await store.release_leases("n:1", time.time()) == committed
            assert len(await store.claim("n:2", time.time(), 1000, time.time() + 60)) == committed
            with pytest.raises(InsufficientStorage):  # its space is the drain's
                await store.enqueue([_message(300)])
            (fs / "other").unlink()
            with pytest.raises(InsufficientStorage):  # until the relay makes it again
                await store.enqueue([_message(301)])
            assert ballast.make()
            await store.enqueue([_message(302)])
        finally:
            await store.close()

    with small_fs(tmp_path / "fs", "16m") as fs:
        asyncio.run(scenario(fs))

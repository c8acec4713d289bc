"""Story: on SQLite the relay commits in a queue writer process of its own; errors come
back typed, and a killed writer is replaced without losing an acknowledged message."""

from __future__ import annotations

import os
import signal
import smtplib
import time

import psutil
import pytest

from mailgate.exceptions import DuplicateEntry
from mailgate.store import NewMessage
from mailgate.store.keys import DuplicateKeyName


def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _send(relay, key: str, n: int) -> int:  # type: ignore[no-untyped-def]
    """Send n messages in one session; how many were acknowledged (250)."""
    acked = 0
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.login("apikey", key)
        for i in range(n):
            try:
                c.sendmail("app@example.com", ["a@dest.test"], f"Subject: {i}\r\n\r\nx\r\n")
            except smtplib.SMTPResponseException as exc:
                assert exc.smtp_code == 451, exc  # only a temporary failure is allowed
                continue
            acked += 1
    return acked


def test_the_writer_is_an_unniced_child_process(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    pid = relay.store.writer.pid
    assert pid is not None and pid != os.getpid()
    child = psutil.Process(pid)
    assert child.ppid() == os.getpid()  # started by the relay (here: this test process)
    assert child.nice() == psutil.Process().nice()  # accepts wait for it: not niced
    key = relay.create_key("w")
    # Typed errors cross the pipe: a taken key name, a duplicate queue id.
    with pytest.raises(DuplicateKeyName):
        relay.create_key("w")
    dup = NewMessage(
        id="fixed-id",
        created_at=time.time(),
        sender="a@example.com",
        recipients=["b@d.test"],
        raw=b"Subject: d\r\n\r\nx\r\n",
    )
    relay.call(relay.store.enqueue([dup]))
    with pytest.raises(DuplicateEntry):
        relay.call(relay.store.enqueue([dup]))
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.login("apikey", key)
        assert c.sendmail("app@example.com", ["a@dest.test"], b"Subject: w\r\n\r\nx\r\n") == {}


def test_a_killed_writer_is_replaced_and_acknowledged_mail_is_kept(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(delivery={"enabled": False})
    key = relay.create_key("w")
    before = relay.call(relay.store.status_counts()).get("queued", 0)
    acked = _send(relay, key, 20)
    assert acked == 20
    pid = relay.store.writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Sends while it restarts get 451 at worst (the client keeps the message), never a 5xx
    # or a lost 250.
    acked += _send(relay, key, 20)
    _wait(lambda: relay.store.writer.pid not in (None, pid))
    assert psutil.Process(relay.store.writer.pid).ppid() == os.getpid()
    acked += _send(relay, key, 5)
    assert relay.call(relay.store.status_counts())["queued"] - before == acked
    assert acked >= 25


def _message(queue_id: str) -> NewMessage:
    return NewMessage(
        id=queue_id,
        created_at=time.time(),
        sender="a@example.com",
        recipients=["b@d.test"],
        raw=b"Subject: c\r\n\r\nx\r\n",
    )


def test_jobs_of_a_commit_cut_short_fail_and_are_not_run_twice(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """The writer process dies during a transaction: whether it committed is unknown, so
    its jobs fail as temporary (the client retries) instead of running again."""
    import asyncio

    from sqlalchemy import Connection

    from mailgate.exceptions import StoreUnavailable
    from mailgate.store import Store

    slow = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000)"
        " SELECT count(*) FROM c"
    )

    def message(i: int) -> NewMessage:
        return _message(f"cut-{i}")

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}", writer_process=True)
        try:
            pid = store.writer.pid
            assert pid is not None
            # One transaction: a statement that runs for seconds, and an accept.
            jobs = asyncio.gather(
                store.writer.run(Connection.exec_driver_sql, slow),
                store.enqueue([message(1)]),
                return_exceptions=True,
            )
            await asyncio.sleep(0.3)
            # The next transaction is handed over while that one runs (it is not held
            # back for the round trip), so it is cut short too.
            queued_behind = asyncio.ensure_future(store.enqueue([message(3)]))
            await asyncio.sleep(0.7)
            os.kill(pid, signal.SIGKILL)
            results = await asyncio.wait_for(jobs, 10)
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(queued_behind, 10)
            assert "retrying one by one" not in caplog.text  # as after an SQL error
            assert await store.get_message("cut-1") is None  # not run again by itself
            assert await store.get_message("cut-3") is None
            await store.enqueue([message(2)])  # the next writer process takes over
            assert store.writer.pid not in (None, pid)
            assert await store.get_message("cut-2") is not None
        finally:
            await store.close()

    asyncio.run(main())


def test_a_bad_job_fails_alone_and_concurrent_writes_all_commit(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Jobs handed to the writer process together: a failing one is retried alone and
    fails alone; hundreds at once (more than two batches' worth) all commit."""
    import asyncio

    from sqlalchemy import Connection

    from mailgate.store import Store

    def message(i: int) -> NewMessage:
        return _message(f"m-{i}")

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}", writer_process=True)
        try:
            results = await asyncio.gather(
                store.enqueue([message(1)]),
                store.writer.run(Connection.exec_driver_sql, "SELECT * FROM no_such_table"),
                store.enqueue([message(2)]),
                return_exceptions=True,
            )
            assert results[0] is None and results[2] is None, results
            assert isinstance(results[1], Exception) and "no_such_table" in str(results[1])
            assert "retrying one by one" in caplog.text  # they were one transaction first
            assert await store.get_message("m-1") is not None
            assert await store.get_message("m-2") is not None
            # A job that cannot travel to the process at all (it does not pickle) too.
            results = await asyncio.gather(
                store.enqueue([message(3)]),
                store.writer.run(lambda conn: None),
                store.enqueue([message(4)]),
                return_exceptions=True,
            )
            assert results[0] is None and results[2] is None, results
            assert isinstance(results[1], Exception)
            assert await store.get_message("m-3") is not None
            assert await store.get_message("m-4") is not None
            await asyncio.gather(*(store.enqueue([message(100 + i)]) for i in range(500)))
            for i in range(500):
                assert await store.get_message(f"m-{100 + i}") is not None
        finally:
            await store.close()

    asyncio.run(main())

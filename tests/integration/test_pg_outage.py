"""Story: PostgreSQL goes away under load and comes back (a TCP proxy between the relay
and the database is cut and restored; the real server is never touched).

While it is away, new mail gets a temporary answer (SMTP 451, HTTP 503), never a crash
and never a 250/202 that is later lost; once it is back, the same process (no restart)
accepts again and delivers everything it acknowledged.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from fakes.load import SmtpLoad, pg_query, wait_until
from fakes.serve import ServeProcess, write_config
from fakes.tcp_proxy import TcpProxy
from fakes.upstream import Upstream

OUTAGE = 3.0  # s the database stays away (at least; until both ingresses have answered)
# Longer than the test waits for results: a result not recorded during the outage would
# leave its delivery leased (and sent again at the lease's end) and fail the test.
LEASE = 60.0


class HttpLoad:
    """One client thread sending through the HTTP API, one request after another."""

    def __init__(self, port: int, key: str) -> None:
        self.acked: list[str] = []
        self.codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=15,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HttpLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._client.close()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {"from": "app@example.com", "to": f"h{n}@dest.test", "subject": "s", "text": "t"}
            try:
                resp = self._client.post("/v1/messages/send", json=body)
            except httpx.HTTPError:
                self.codes[0] += 1
                continue
            self.codes[resp.status_code] += 1
            if resp.status_code == 202:
                self.acked.append(resp.json()["data"]["id"])
            elif resp.status_code == 503:
                self._stop.wait(0.05)


def test_postgresql_outage_under_load(tmp_path: Path, pg_url: str) -> None:
    host, port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")
    with Upstream() as up, TcpProxy(host, int(port)) as proxy:
        cfg = write_config(
            tmp_path,
            up.port,
            extra=(
                f'[database]\nurl = "{proxy.url(pg_url)}"\n'
                f'[delivery]\nlease = "{LEASE}s"\nshutdown_grace = "1s"\n'
            ),
        )
        create = ["keys", "create", "--name", "app", "--config", str(cfg)]
        made = subprocess.run(
            [sys.executable, "-m", "mailgate.cli", *create],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = made.stdout.strip().splitlines()[-1]
        node = ServeProcess(cfg, tmp_path / "serve.log")
        smtp = SmtpLoad(lambda: [node.port], clients=4).start()
        http = HttpLoad(node.http_port, key).start()
        try:
            wait_until(lambda: len(smtp.acked) >= 50 and len(http.acked) >= 5, 30, "accepts")
            proxy.cut()
            cut_at = time.monotonic()
            wait_until(
                lambda: smtp.replies[451] >= 5 and http.codes[503] >= 1, 30, "451 and 503 answers"
            )
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - cut_at)))
            assert node.proc.poll() is None, "the relay died with its database"
            smtp_before, http_before = len(smtp.acked), len(http.acked)
            proxy.restore()
            # The same process accepts again by itself.
            wait_until(
                lambda: len(smtp.acked) >= smtp_before + 50 and len(http.acked) >= http_before + 5,
                30,
                "accepts after the database came back",
            )
        finally:
            smtp.stop()
            http.stop()
        try:
            acked = set(smtp.acked) | set(http.acked)
            wait_until(lambda: acked <= set(up.by_queue_id()), 40, "every acknowledged delivery")

            def all_recorded() -> bool:
                sql = "SELECT count(*) AS n FROM deliveries WHERE status <> 'sent'"
                rows = pg_query(pg_url, sql)
                return int(rows[0]["n"]) == 0

            # Results of attempts made while the database was away are recorded once it is
            # back (retried within the lease), not left to the lease's end and sent again.
            wait_until(all_recorded, 20, "every result recorded")
            assert max(up.by_queue_id().values()) == 1, "a message went out twice"
            assert node.proc.poll() is None
            print(f"smtp={dict(smtp.replies)} http={dict(http.codes)} cut={proxy.cut_connections}")
            assert set(smtp.replies) <= {250, 451, 0}, smtp.replies
            assert set(http.codes) <= {202, 503, 0}, http.codes
        finally:
            node.close()


def test_a_group_whose_commit_answer_was_lost_fails_and_is_not_run_again(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection goes away after PostgreSQL took a group commit's COMMIT: whether it
    committed is unknown to the relay. Its jobs fail as the database being unavailable
    (clients retry) and are not run again one by one: they did commit, and a second
    insert of the same message would be refused as a duplicate."""
    from sqlalchemy import Connection

    from mailgate.exceptions import DuplicateEntry, StoreUnavailable
    from mailgate.store import NewMessage, Store

    def message(i: int) -> NewMessage:
        return NewMessage(
            id=f"lost-{i}",
            created_at=time.time(),
            sender="app@example.com",
            recipients=["r@dest.test"],
            raw=b"Subject: x\r\n\r\nbody\r\n",
        )

    host, port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")

    async def main() -> None:
        with TcpProxy(host, int(port)) as proxy:
            url = "postgresql+asyncpg://" + proxy.url(pg_url).split("://", 1)[1]
            store = await Store.open(url)
            try:
                await store.enqueue([message(0)])
                proxy.lose_answer(b"lose-the-commit", b"COMMIT")
                mark = "SELECT 'lose-the-commit'"
                results = await asyncio.gather(
                    store.writer.run(Connection.exec_driver_sql, mark),
                    store.enqueue([message(1)]),
                    store.enqueue([message(2)]),
                    return_exceptions=True,
                )
                assert proxy.lost_answers == 1
                assert not any(isinstance(r, DuplicateEntry) for r in results), results
                assert all(isinstance(r, StoreUnavailable) for r in results), results
                assert "retrying one by one" not in caplog.text
                # It had committed: the messages are queued, once.
                assert await store.get_message("lost-1") is not None
                assert await store.get_message("lost-2") is not None
            finally:
                await store.close()

    asyncio.run(main())

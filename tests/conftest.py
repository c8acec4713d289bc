"""Shared fixtures: settings builder, an in-process relay, TLS certificates, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from mailgate.app import App
from mailgate.config import Settings, load_settings
from mailgate.credentials import create_key
from mailgate.models import DeliveryStatus, QueuedMessage
from mailgate.store import DeliveryUpdate

T = TypeVar("T")

BASE_PG_URL = os.environ.get("MAILGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# Under pytest-xdist each worker empties and fills a database of its own (test_gw0, ...),
# made on first use beside the base one.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_BASE = make_url(BASE_PG_URL)
PG_URL = (
    _BASE.set(database=f"{_BASE.database}_{_WORKER}").render_as_string(hide_password=False)
    if _WORKER
    else BASE_PG_URL
)
_pg_made = False


def build_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings for a test relay: loopback port 0, example.com, a maildir provider."""
    data: dict[str, Any] = {
        # A small ballast: each test relay makes one, without 64 MB of disk apiece.
        "server": {
            "hostname": "relay.test",
            "data_dir": str(tmp_path / "data"),
            "ballast_size": "64KiB",
        },
        "smtp": {"listen": ["127.0.0.1:0"], "auth_failure_delay": "10ms"},
        "http": {"listen": ["127.0.0.1:0"]},
        "domains": [{"name": "example.com"}, {"name": "example.org"}],
        "providers": [{"name": "capture", "kind": "maildir", "path": str(tmp_path / "maildir")}],
        "retry": {"min_backoff": "200ms", "max_backoff": "1s", "jitter": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return load_settings(data=data, environ={})


def sent_updates(claimed: list[QueuedMessage], response: str = "250") -> list[DeliveryUpdate]:
    """A first attempt's "sent" result (provider "p") for every delivery of ``claimed``,
    for tests that record deliveries done straight through the store."""
    return [
        DeliveryUpdate(
            m.id, c.rcpt_idx, c.recipient, DeliveryStatus.SENT, 1, None, "p", response, "sent"
        )
        for m in claimed
        for c in m.deliveries
    ]


class RelayRunner:
    """The whole relay (App) running in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="relay")

    def start(self) -> RelayRunner:
        self._thread.start()
        self.call(self.app.start())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.app.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    @property
    def store(self):  # type: ignore[no-untyped-def]
        assert self.app.store is not None
        return self.app.store

    def port(self, implicit_tls: bool = False) -> int:
        assert self.app.smtp is not None
        for _host, port, implicit in self.app.smtp.addresses():
            if implicit == implicit_tls:
                return port
        raise AssertionError("no such listener")

    def create_key(
        self, name: str = "app", scope: str = "send", domains: tuple[str, ...] = (), rate: str = ""
    ) -> str:
        return self.call(create_key(self.store, name, scope, domains, rate))

    @property
    def http_url(self) -> str:
        assert self.app.http is not None
        host, port = self.app.http.addresses()[0]
        return f"http://{host}:{port}"

    def message(self, queue_id: str) -> dict[str, Any]:
        msg = self.call(self.store.get_message(queue_id))
        assert msg is not None, f"no message {queue_id}"
        return msg

    def statuses(self, queue_id: str) -> dict[str, str]:
        return {d["recipient"]: d["status"] for d in self.message(queue_id)["deliveries"]}

    def wait_status(
        self, queue_id: str, predicate: Callable[[dict[str, str]], bool], timeout: float = 10.0
    ) -> dict[str, str]:
        import time

        deadline = time.monotonic() + timeout
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = self.statuses(queue_id)
            if predicate(statuses):
                return statuses
            time.sleep(0.05)
        raise AssertionError(f"status of {queue_id} still {statuses}")

    def events(self, queue_id: str) -> list[dict[str, Any]]:
        return self.call(self.store.events_of(queue_id))


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayRunner]]:
    """Start relays with settings overrides; all are stopped at the end of the test."""
    started: list[RelayRunner] = []

    def start(**sections: Any) -> RelayRunner:
        runner = RelayRunner(build_settings(tmp_path, **sections)).start()
        started.append(runner)
        return runner

    yield start
    for runner in reversed(started):
        runner.stop()


@pytest.fixture
def relay(relay_factory: Callable[..., RelayRunner]) -> RelayRunner:
    return relay_factory()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A test CA and a server certificate for localhost / 127.0.0.1 (trustme)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "relay.test")
    folder = tmp_path_factory.mktemp("tls")
    cert_path = folder / "cert.pem"
    key_path = folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(cert_path, append=True)
    cert.private_key_pem.write_to_path(key_path)
    ca_path = folder / "ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    return {
        "cert": str(cert_path),
        "key": str(key_path),
        "client_context": client_ctx,
        "server_context": server_ctx,
        "ca": ca,
        "ca_file": str(ca_path),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on each engine in turn: a fresh SQLite file, then the emptied PostgreSQL
    test database (through asyncpg)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
    pg = request.getfixturevalue("pg_url")
    return "postgresql+asyncpg://" + pg.split("://", 1)[1]


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL test database, emptied. Fails (never skips) when it is unreachable."""
    import asyncpg

    async def make() -> None:
        conn = await asyncpg.connect(BASE_PG_URL, timeout=10)
        try:
            name = make_url(PG_URL).database
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def reset() -> None:
        global _pg_made
        if PG_URL != BASE_PG_URL and not _pg_made:
            await make()
            _pg_made = True
        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(reset())
    return PG_URL

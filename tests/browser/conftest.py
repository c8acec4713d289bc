"""One relay and one headless Chromium for the browser tests (the distribution's chromium and
chromedriver, driven by Selenium). A missing browser fails the tests, never skips them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from tests.conftest import RelayRunner, build_settings

from fakes.upstream import Upstream

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("MAILGATE_SCREENSHOTS", tempfile.gettempdir())) / (
    "mailgate-ui-screenshots"
)
DEFERRED_REPLY = "450 4.2.1 Mailbox busy, try later"


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        up.faults.rcpt_replies = {"slow@defer.test": DEFERRED_REPLY}
        yield up


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[RelayRunner]:
    """Mail to defer.test goes to the fake upstream (which defers it); the rest is captured.
    example.com's mail is DKIM-signed (selector ui1)."""
    from mailgate.delivery.dkim import generate_key

    tmp = tmp_path_factory.mktemp("ui")
    pem, _txt = generate_key("ed25519")
    (tmp / "dkim.pem").write_bytes(pem)
    settings = build_settings(
        tmp,
        domains=[
            {"name": "example.com", "dkim_selector": "ui1", "dkim_key": str(tmp / "dkim.pem")},
            {"name": "example.org"},
        ],
        providers=[
            {"name": "capture", "kind": "maildir", "path": str(tmp / "maildir"), "priority": 1},
            {
                "name": "upstream",
                "priority": 50,
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": upstream.port,
                "tls": "none",
            },
        ],
        routes=[{"recipient_domains": ["defer.test"], "providers": ["upstream"]}],
        retry={"min_backoff": "10m", "max_backoff": "1h", "jitter": 0},
    )
    runner = RelayRunner(settings).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install the chromium and chromium-driver packages "
            "(scripts/test does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mailgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def safe(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower())


def find(driver: Any, css: str, timeout: float = 10.0) -> Any:
    """The element once it is there (a click's page load may still be under way)."""
    return wait(lambda: driver.find_element(By.CSS_SELECTOR, css), timeout, css)


def shows(driver: Any, css: str, part: str, timeout: float = 10.0) -> str:
    """The element's text once it contains ``part``: after a click the previous page (and
    its notice) may still be there for a moment."""
    return str(
        wait(
            lambda: (t := driver.find_element(By.CSS_SELECTOR, css).text) and part in t and t,
            timeout,
            f"{part!r} in {css}",
        )
    )


def text(driver: Any) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def login(driver: Any, relay: RelayRunner, key: str) -> None:
    driver.get(relay.http_url + "/ui/login")
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


@pytest.fixture(scope="session")
def keys(relay: RelayRunner) -> dict[str, str]:
    return {"admin": relay.create_key("ops", "admin"), "send": relay.create_key("app", "send")}

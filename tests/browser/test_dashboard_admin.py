"""The dashboard's admin pages in a real browser: jobs (progress, pause, resume, stop),
templates (edit, preview, sandbox errors), webhooks (failed deliveries, replay), API keys
(last use) and a logout that ends the session on the server. Screenshots as in
test_dashboard.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from tests.browser.conftest import find, login, shot, text, wait
from tests.conftest import RelayRunner


@pytest.fixture(scope="module", autouse=True)
def signed_in(browser: Any, relay: RelayRunner, keys: dict[str, str]) -> None:
    login(browser, relay, keys["admin"])
    wait(lambda: browser.current_url.endswith("/ui/"), what="the overview")


def api(relay: RelayRunner, key: str, method: str, path: str, body: Any = None) -> Any:
    answer = httpx.request(
        method,
        relay.http_url + path,
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_jobs_progress_pause_resume_stop(
    browser: Any, relay: RelayRunner, keys: dict[str, str]
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    batch = api(
        relay,
        keys["send"],
        "POST",
        "/v1/messages/batch",
        {
            "from": "news@example.com",
            "subject": "Weekly for {{ name }}",
            "text": "Hello {{ name }}",
            "scheduled_at": later,
            "campaign_id": "weekly-42",
            "recipient_variables": {
                "ann@example.net": {"name": "Ann"},
                "bob@example.net": {"name": "Bob"},
            },
        },
    )
    job_id = batch["data"]["job_id"]
    browser.get(relay.http_url + "/ui/jobs")
    row = find(browser, f"#job-{job_id}")
    assert "weekly-42" in row.text and "0 sent, 0 failed, 2 pending of 2" in row.text
    assert browser.find_element(By.ID, f"progress-{job_id}").get_attribute("max") == "2"
    row.find_element(By.CSS_SELECTOR, "button[aria-label='Pause job weekly-42']").click()
    assert "paused" in find(browser, ".notice").text
    assert "paused" in find(browser, f"#job-{job_id}").text
    shot(browser, "jobs")
    assert api(relay, keys["admin"], "GET", f"/v1/jobs/{job_id}")["data"]["status"] == "paused"
    find(browser, "button[aria-label='Resume job weekly-42']").click()
    assert "resumed" in find(browser, ".notice").text
    find(browser, "button[aria-label='Stop job weekly-42']").click()
    assert "stopped" in find(browser, ".notice").text
    assert api(relay, keys["admin"], "GET", f"/v1/jobs/{job_id}")["data"]["status"] == "stopped"
    # The job's messages, by the messages page's job search.
    find(browser, f"#job-{job_id} a").click()
    wait(lambda: "job=" in browser.current_url, what="the job's messages")
    assert text(browser).count("Weekly for") == 2

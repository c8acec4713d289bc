"""The dashboard's admin pages in a real browser: jobs (progress, pause, resume, stop),
templates (edit, preview, sandbox errors), webhooks (failed deliveries, replay), API keys
(last use) and a logout that ends the session on the server. Screenshots as in
test_dashboard.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from tests.browser.conftest import find, login, shot, shows, text, wait
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
    shows(browser, ".notice", "paused")
    shows(browser, f"#job-{job_id}", "paused")
    shot(browser, "jobs")
    assert api(relay, keys["admin"], "GET", f"/v1/jobs/{job_id}")["data"]["status"] == "paused"
    find(browser, "button[aria-label='Resume job weekly-42']").click()
    shows(browser, ".notice", "resumed")
    find(browser, "button[aria-label='Stop job weekly-42']").click()
    shows(browser, ".notice", "stopped")
    assert api(relay, keys["admin"], "GET", f"/v1/jobs/{job_id}")["data"]["status"] == "stopped"
    # The job's own page: its counts by status, events and messages.
    find(browser, f"#job-{job_id} a").click()
    wait(lambda: browser.current_url.endswith(f"/ui/jobs/{job_id}"), what="the job's page")
    shows(browser, "#job-status", "stopped")
    assert "cancelled 2" in find(browser, "#job-counts").text
    assert text(browser).count("Weekly for") == 2
    assert "stopped" in find(browser, "ol.timeline").text
    shot(browser, "job")
    # All of them, by the messages page's job search.
    find(browser, "#job-messages").click()
    wait(lambda: "job=" in browser.current_url, what="the job's messages")
    assert text(browser).count("Weekly for") == 2


def test_templates_edit_preview_and_sandbox_errors(browser: Any, relay: RelayRunner) -> None:
    browser.get(relay.http_url + "/ui/templates")
    assert "No templates yet" in text(browser)
    browser.find_element(By.ID, "t-name").send_keys("welcome")
    browser.find_element(By.ID, "t-subject").send_keys("Welcome, {{ name }}")
    browser.find_element(By.ID, "t-text").send_keys("Hi {{ name }}, you have {{ items|length }}.")
    browser.find_element(By.ID, "t-html").send_keys(
        '<p id="hi" style="color: red">Hi {{ name }}</p><script>document.title="ran"</script>'
    )
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/templates/create'] button").click()
    shows(browser, ".notice", "Template created")
    variables = browser.find_element(By.ID, "t-vars")
    variables.clear()
    variables.send_keys('{"name": "<b>Ann</b>", "items": [1, 2]}')
    browser.find_element(By.ID, "t-preview").click()
    assert find(browser, "#preview-subject").text == "Welcome, <b>Ann</b>"
    assert find(browser, "#preview-text").text == "Hi <b>Ann</b>, you have 2."
    frame = browser.find_element(By.CSS_SELECTOR, "#preview iframe")
    browser.switch_to.frame(frame)
    try:
        hi = wait(lambda: browser.find_element(By.ID, "hi"), what="the html preview")
        assert hi.text == "Hi <b>Ann</b>"  # escaped in html bodies
        assert browser.title != "ran"  # no script ran
    finally:
        browser.switch_to.default_content()
    browser.execute_script("document.getElementById('t-vars').scrollIntoView()")
    shot(browser, "template-preview")
    # A variable the sample does not give: the sandbox's message, not a stack trace.
    variables = browser.find_element(By.ID, "t-vars")
    variables.clear()
    variables.send_keys('{"name": "Ann"}')
    browser.find_element(By.ID, "t-preview").click()
    shows(browser, "#template-error", "text: template variable 'items' is undefined")
    # Unbounded work is refused by the sandbox too.
    subject = browser.find_element(By.ID, "t-subject")
    subject.clear()
    subject.send_keys("{{ 9 ** (9 ** 9) }}")
    browser.find_element(By.ID, "t-preview").click()
    shows(browser, "#template-error", "too large")
    browser.execute_script("document.getElementById('t-vars').scrollIntoView()")
    shot(browser, "template-error")
    # Save checks syntax as the API does.
    subject = browser.find_element(By.ID, "t-subject")
    subject.clear()
    subject.send_keys("Hello {{ name")
    browser.find_element(By.ID, "t-save").click()
    shows(browser, "#template-error", "Not saved: subject: template error")
    subject = find(browser, "#t-subject")
    subject.clear()
    subject.send_keys("Hello {{ name }}")
    browser.find_element(By.ID, "t-save").click()
    shows(browser, ".notice", "Template saved")
    assert find(browser, "#t-subject").get_attribute("value") == "Hello {{ name }}"


def test_webhooks_failed_deliveries_and_replay(browser: Any, relay: RelayRunner) -> None:
    import sqlalchemy as sa

    from mailgate.store.schema import webhook_deliveries as wd

    browser.get(relay.http_url + "/ui/webhooks")
    assert "No webhook endpoints" in text(browser)
    now = time.time()
    endpoint = {
        "id": "wh_ui_test",
        "url": "http://127.0.0.1:9/hook",
        "events": ["message.complained"],
        "secret": "whsec_test",
        "description": "the shop",
        "source": "api",
        "created_at": now,
        "updated_at": now,
        # Disabled, so the relay's dispatcher leaves its deliveries alone: their events are
        # made up (never stored), and a replayed one would fail again at once as gone.
        "disabled_at": now,
        "disabled_reason": "kept still for this test",
    }
    relay.call(relay.store.webhooks.create(endpoint))
    url = sa.engine.make_url(relay.settings.database_url)
    engine = sa.create_engine(url.set(drivername=url.get_backend_name()))  # sync driver
    with engine.begin() as conn:
        ids = [
            conn.execute(
                sa.insert(wd)
                .values(
                    endpoint_id="wh_ui_test",
                    status="failed",
                    attempts=8,
                    last_status=500,
                    last_error="server error",
                    created_at=now - 60 * i,
                )
                .returning(wd.c.id)
            ).scalar_one()
            for i in range(3)
        ]
    browser.get(relay.http_url + "/ui/webhooks")
    box = find(browser, "#endpoint-wh_ui_test")
    assert "the shop" in box.text and box.text.count("HTTP 500 server error") == 3
    shot(browser, "webhooks")
    box.find_element(By.CSS_SELECTOR, f"button[aria-label='Replay msg_{ids[0]}']").click()
    shows(browser, ".notice", "1 failed deliveries")
    assert "once the endpoint is enabled" in find(browser, ".notice").text  # it is disabled
    # A delivery id past a BIGINT: a 400 on the page, not a 500.
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const csrf = document.querySelector("input[name=csrf]").value;
        fetch('/ui/webhooks/wh_ui_test/replay', {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/x-www-form-urlencoded'},
          body: 'csrf=' + encodeURIComponent(csrf) + '&delivery=' + '1'.repeat(30)}
        ).then(r => done(r.status));"""
    )
    assert status == 400
    with engine.begin() as conn:
        statuses = dict(conn.execute(sa.select(wd.c.id, wd.c.status)).all())
    assert statuses[ids[0]] == "pending" and statuses[ids[1]] == "failed"
    find(browser, "#endpoint-wh_ui_test form.inline button").click()  # the last 24 h
    shows(browser, ".notice", "2 failed deliveries")
    engine.dispose()


def test_keys_show_when_they_were_last_used(
    browser: Any, relay: RelayRunner, keys: dict[str, str]
) -> None:
    api(relay, keys["send"], "GET", "/v1/templates")  # whatever ran before in this worker
    browser.get(relay.http_url + "/ui/keys")
    browser.find_element(By.ID, "k-name").send_keys("unused")
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/keys/create'] button").click()
    find(browser, "#new-key")
    rows = {
        r.find_element(By.CSS_SELECTOR, "td").text: r.find_element(By.CSS_SELECTOR, ".last-used")
        for r in browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    }
    assert rows["unused"].text == "never"
    # "app" made a request, "ops" logged in: both are recorded, in the background.
    wait(
        lambda: relay.call(relay.store.keys.by_name("app")).last_used_at,
        what="app's last use to be written",
    )
    browser.get(relay.http_url + "/ui/keys")  # not a refresh: that would post again
    rows = {
        r.find_element(By.CSS_SELECTOR, "td").text: r.find_element(By.CSS_SELECTOR, ".last-used")
        for r in browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    }
    for name in ("app", "ops"):
        when = rows[name].find_element(By.TAG_NAME, "time").get_attribute("datetime")
        assert when.startswith(str(datetime.now(UTC).year)), when
    shot(browser, "keys")


def test_log_out_ends_the_session_on_the_server(browser: Any, relay: RelayRunner) -> None:
    browser.get(relay.http_url + "/ui/jobs")
    cookie = browser.get_cookie("mailgate_ui")["value"]
    copied = httpx.get(relay.http_url + "/ui/jobs", cookies={"mailgate_ui": cookie})
    assert copied.status_code == 200
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(lambda: "/ui/login" in browser.current_url, what="the login page")
    # The cookie's copy no longer opens a page: the server ended the session.
    copied = httpx.get(relay.http_url + "/ui/jobs", cookies={"mailgate_ui": cookie})
    assert copied.status_code == 303 and "/ui/login" in copied.headers["location"]

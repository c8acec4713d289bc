"""The dashboard's management actions in a real browser: delete a template; create, edit,
disable and delete a webhook endpoint (its secret shown once, the SSRF check's message);
change a key's rate, quota and domains; list this key's sessions and end another one.
Screenshots as in test_dashboard.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from tests.browser.conftest import find, login, shot, shows, text, wait
from tests.browser.test_dashboard_admin import api
from tests.conftest import RelayRunner


@pytest.fixture(scope="module", autouse=True)
def signed_in(browser: Any, relay: RelayRunner, keys: dict[str, str]) -> None:
    login(browser, relay, keys["admin"])
    wait(lambda: browser.current_url.endswith("/ui/"), what="the overview")


def test_delete_a_template(browser: Any, relay: RelayRunner, keys: dict[str, str]) -> None:
    made = api(
        relay,
        keys["send"],
        "POST",
        "/v1/templates",
        {"id": "tpl-gone", "name": "to delete", "subject": "Hi", "text": "x"},
    )
    assert made["data"]["id"] == "tpl-gone"
    browser.get(relay.http_url + "/ui/templates/tpl-gone")
    # The box must be ticked (the browser refuses the form without it; so does the server).
    unconfirmed = httpx.post(
        relay.http_url + "/ui/templates/tpl-gone/delete",
        data={"csrf": find(browser, "input[name=csrf]").get_attribute("value")},
        cookies={"mailgate_ui": browser.get_cookie("mailgate_ui")["value"]},
    )
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.text
    browser.find_element(By.ID, "t-delete-confirm").click()
    browser.find_element(By.ID, "t-delete").click()
    shows(browser, ".notice", "deleted")
    assert browser.current_url.split("?")[0].endswith("/ui/templates")
    assert "tpl-gone" not in find(browser, "main").text.replace("tpl-gone) deleted", "")
    gone = httpx.get(
        relay.http_url + "/v1/templates/tpl-gone",
        headers={"Authorization": f"Bearer {keys['send']}"},
    )
    assert gone.status_code == 404


def _open(browser: Any, css: str) -> None:
    """Open a <details> (open already when the page has no endpoint) with the keyboard."""
    details = find(browser, css)
    if details.get_attribute("open") is None:
        details.find_element(By.TAG_NAME, "summary").click()


def test_webhook_endpoint_create_edit_disable_delete(
    browser: Any, relay: RelayRunner, keys: dict[str, str]
) -> None:
    browser.get(relay.http_url + "/ui/webhooks")
    _open(browser, "details.new-endpoint")
    # The API's SSRF check: this machine is refused, with the reason.
    find(browser, "#w-url").send_keys("http://127.0.0.1:9/hook")
    browser.find_element(By.CSS_SELECTOR, "#webhook-create button[type=submit]").click()
    shows(browser, "main", "a loopback address")
    browser.get(relay.http_url + "/ui/webhooks")
    _open(browser, "details.new-endpoint")
    find(browser, "#w-url").send_keys("https://hooks.example.invalid/mail")
    browser.find_element(By.ID, "w-description").send_keys("the shop")
    for box in browser.find_elements(By.CSS_SELECTOR, "#webhook-create input[type=checkbox]"):
        if box.get_attribute("name") not in ("ev-message.bounced", "ev-message.complained"):
            box.click()  # all are ticked at first
    form = browser.execute_script(
        "return new URLSearchParams(new FormData(document.getElementById('webhook-create')))"
        ".toString()"
    )
    browser.find_element(By.CSS_SELECTOR, "#webhook-create button[type=submit]").click()
    secret = find(browser, "#new-secret").get_attribute("value")
    # The same form sent again (a refresh of this answer) makes no second endpoint.
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/ui/webhooks/create', {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: arguments[0]}
        ).then(r => done(r.status));""",
        form,
    )
    assert status == 200  # the redirect to the page, followed
    made = api(relay, keys["admin"], "GET", "/v1/webhooks")["data"]
    assert [e["url"] for e in made].count("https://hooks.example.invalid/mail") == 1
    assert secret.startswith("whsec_")
    shot(browser, "webhook-created")
    endpoint_id = find(browser, "#webhook-created code").text
    got = api(relay, keys["admin"], "GET", f"/v1/webhooks/{endpoint_id}")["data"]
    assert got["events"] == ["message.bounced", "message.complained"]
    assert got["url"] == "https://hooks.example.invalid/mail" and "secret" not in got
    # Reloaded, the secret is gone from the page.
    browser.get(relay.http_url + "/ui/webhooks")
    assert secret not in browser.page_source

    box = find(browser, f"#endpoint-{endpoint_id}")
    box.find_element(By.CSS_SELECTOR, "details.edit-endpoint summary").click()
    url = box.find_element(By.ID, f"url-{endpoint_id}")
    url.clear()
    url.send_keys("https://hooks2.example.invalid/mail")
    box.find_element(By.ID, f"ev-{endpoint_id}-message.delivered").click()
    box.find_element(By.ID, f"enabled-{endpoint_id}").click()  # off
    box.find_element(By.CSS_SELECTOR, "button[aria-label^='Save endpoint']").click()
    shows(browser, ".notice", "disabled")
    got = api(relay, keys["admin"], "GET", f"/v1/webhooks/{endpoint_id}")["data"]
    assert got["url"] == "https://hooks2.example.invalid/mail" and not got["enabled"]
    assert "message.delivered" in got["events"]
    assert "disabled" in find(browser, f"#endpoint-{endpoint_id}").text

    box = find(browser, f"#endpoint-{endpoint_id}")
    box.find_element(By.CSS_SELECTOR, "details.edit-endpoint summary").click()
    box.find_element(By.ID, f"del-{endpoint_id}").click()
    box.find_element(By.CSS_SELECTOR, "button[aria-label^='Delete endpoint']").click()
    shows(browser, ".notice", "deleted")
    missing = httpx.get(
        relay.http_url + f"/v1/webhooks/{endpoint_id}",
        headers={"Authorization": f"Bearer {keys['admin']}"},
    )
    assert missing.status_code == 404


def _fill_limits(browser: Any, relay: RelayRunner, name: str, **values: str) -> Any:
    """Open key ``name``'s limits form on the keys page and type ``values`` into it; the
    button that saves them."""
    browser.get(relay.http_url + "/ui/keys")
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
        if r.find_element(By.CSS_SELECTOR, "td").text == name
    )
    row.find_element(By.CSS_SELECTOR, "details.key-limits summary").click()
    for field, value in values.items():
        box = row.find_element(By.CSS_SELECTOR, f"input[name={field}]")
        box.clear()
        box.send_keys(value)
    return row.find_element(By.CSS_SELECTOR, f"button[aria-label='Save the limits of {name}']")


def test_change_a_keys_rate_quota_and_domains(browser: Any, relay: RelayRunner) -> None:
    relay.create_key("limited", "send")
    _fill_limits(browser, relay, "limited", rate="fast", quota="", domains="").click()
    shows(browser, "main", "invalid rate 'fast'")

    save = _fill_limits(
        browser, relay, "limited", rate="5/s", quota="100/day", domains="nowhere.test"
    )
    save.click()
    shows(browser, "main", "not in [[domains]]")

    save = _fill_limits(
        browser, relay, "limited", domains="Example.org", rate="5/s", quota="100/day"
    )
    shot(browser, "key-limits")
    save.click()
    shows(browser, ".notice", "rate 5/s, quota 100/d, domains example.org")
    record = relay.call(relay.store.keys.by_name("limited"))
    assert (record.rate, record.quota, record.domains) == ("5/s", "100/d", ("example.org",))
    assert "5/s" in text(browser) and "100/d" in text(browser)


def _login_elsewhere(relay: RelayRunner, key: str) -> httpx.Client:
    """A second session of the same key, from another client."""
    client = httpx.Client(
        base_url=relay.http_url, headers={"User-Agent": "other-laptop/1.0"}, timeout=10
    )
    form = client.get("/ui/login")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/ui/login", data={"key": key, "csrf": csrf, "next": "/ui/"})
    assert answer.status_code == 303, answer.text
    assert client.get("/ui/jobs").status_code == 200
    return client


def test_list_sessions_and_end_another(
    browser: Any, relay: RelayRunner, keys: dict[str, str]
) -> None:
    other = _login_elsewhere(relay, keys["admin"])
    browser.get(relay.http_url + "/ui/sessions")
    table = find(browser, "#sessions")
    assert "this session" in table.text and "other-laptop/1.0" in table.text
    shot(browser, "sessions")
    row = next(
        r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if "other-laptop/1.0" in r.text
    )
    row.find_element(By.CSS_SELECTOR, "button").click()
    shows(browser, ".notice", "has ended")
    assert "other-laptop/1.0" not in find(browser, "main").text
    # The other client is logged out at its next request; this one is not.
    ended = other.get("/ui/jobs")
    assert ended.status_code == 303 and "/ui/login" in ended.headers["location"]
    other.close()
    browser.get(relay.http_url + "/ui/jobs")
    assert browser.current_url.endswith("/ui/jobs")

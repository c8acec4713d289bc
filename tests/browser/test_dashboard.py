"""The dashboard in a real browser: log in, watch mail arrive, read attempts, retry, preview
captured html with an inline image, manage suppressions; refusals of CSRF-less POSTs and of
non-admin keys. Each page is screenshotted (conftest.SCREENSHOTS)."""

from __future__ import annotations

import smtplib
import urllib.parse
from email.message import EmailMessage
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from tests.browser.conftest import DEFERRED_REPLY, SCREENSHOTS, login, shot, shows, text, wait
from tests.conftest import RelayRunner

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63"
    "f8cfc0f01f0005000201a5a4c7a40000000049454e44ae426082"
)


def send(relay: RelayRunner, to: str, subject: str, html: str = "", image: bool = False) -> None:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"text part of {subject}")
    if html:
        msg.add_alternative(html, subtype="html")
        if image:
            msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@test>")
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
        client.send_message(msg, "app@example.com", [to])


@pytest.fixture(autouse=True)
def signed_in(
    request: pytest.FixtureRequest, browser: Any, relay: RelayRunner, keys: dict[str, str]
) -> None:
    """Signed in as admin, whatever ran before in this worker (xdist hands a worker tests
    of several modules, some of which log out); the login tests start as they are."""
    if "log_in" in request.node.name:
        return
    browser.get(relay.http_url + "/ui/")
    if "/ui/login" in browser.current_url:
        login(browser, relay, keys["admin"])
        wait(lambda: browser.current_url.endswith("/ui/"), what="the overview")


def test_a_send_key_cannot_log_in(browser: Any, relay: RelayRunner, keys: dict[str, str]) -> None:
    login(browser, relay, keys["send"])
    shows(browser, "#login-error", "cannot open the dashboard")
    assert browser.get_cookie("mailgate_ui") is None
    shot(browser, "login-refused")


def test_log_in_with_an_admin_key(browser: Any, relay: RelayRunner, keys: dict[str, str]) -> None:
    login(browser, relay, keys["admin"])
    wait(lambda: browser.current_url.endswith("/ui/"), what="the overview")
    cookie = browser.get_cookie("mailgate_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "Overview" in text(browser)


def test_new_mail_appears_on_the_overview_without_reload(browser: Any, relay: RelayRunner) -> None:
    browser.get(relay.http_url + "/ui/")
    before = int(browser.find_element(By.ID, "total-accepted").text)
    browser.execute_script("window.__sameDocument = true")
    send(relay, "reader@example.net", "Hello from the overview test")
    wait(
        lambda: int(browser.find_element(By.ID, "total-accepted").text) > before,
        timeout=15,
        what="the accepted count to rise",
    )
    assert browser.execute_script("return window.__sameDocument === true")  # no reload
    wait(lambda: int(browser.find_element(By.ID, "total-delivered").text) >= 1, timeout=15)
    shot(browser, "overview")


def test_message_detail_shows_the_attempts_reply(browser: Any, relay: RelayRunner) -> None:
    # Its own message: xdist may run this test in a worker without the overview test.
    send(relay, "detail@example.net", "Hello from the detail test")
    browser.get(relay.http_url + "/ui/messages?to=detail@example.net")
    wait(
        lambda: (
            browser.find_elements(By.LINK_TEXT, "Hello from the detail test") or browser.refresh()
        ),
        timeout=15,
        what="the message in the list",
    )
    shot(browser, "messages")
    browser.find_element(By.LINK_TEXT, "Hello from the detail test").click()
    reply = wait(
        lambda: (
            (
                browser.find_elements(By.CSS_SELECTOR, ".attempts td.reply")
                and browser.find_element(By.CSS_SELECTOR, ".attempts td.reply").text
            )
            or browser.refresh()
        ),
        timeout=15,
        what="a reply",
    )
    assert reply.startswith("250 2.0.0 saved as")
    assert "capture" in browser.find_element(By.CSS_SELECTOR, ".attempts").text
    assert browser.find_element(By.CSS_SELECTOR, ".attempts td.duration").text.endswith(" ms")
    assert "d=example.com s=ui1" in browser.find_element(By.ID, "dkim").text
    assert "queued" in browser.find_element(By.CSS_SELECTOR, ".timeline").text
    shot(browser, "message")


def test_retry_a_deferred_message(browser: Any, relay: RelayRunner) -> None:
    send(relay, "slow@defer.test", "Deferred one")
    browser.get(relay.http_url + "/ui/messages?to=slow@defer.test&status=deferred")
    wait(
        lambda: browser.find_elements(By.LINK_TEXT, "Deferred one") or browser.refresh(),
        timeout=15,
        what="the deferred message",
    )
    browser.find_element(By.LINK_TEXT, "Deferred one").click()
    assert DEFERRED_REPLY in browser.find_element(By.CSS_SELECTOR, ".attempts").text
    browser.find_element(By.ID, "action-retry").click()
    shows(browser, ".notice", "retry: 1 recipient(s) changed")
    assert "retry by an operator" in browser.find_element(By.CSS_SELECTOR, ".timeline").text
    shot(browser, "message-retried")
    # The retried attempt is recorded (deferred again) before the bounce: not in flight.
    wait(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, ".attempts tbody tr")) >= 2
            or browser.refresh()
        ),
        timeout=15,
        what="the retried attempt",
    )
    browser.find_element(By.ID, "bounce-reason").send_keys("cancelled by support")
    browser.find_element(By.ID, "action-bounce").click()
    shows(browser, ".notice", "bounce: 1 recipient(s) changed, 1 DSN(s) queued")
    assert "550 5.0.0 cancelled by support" in text(browser)
    # Retry brings a recipient that ended (bounced, failed) back too.
    browser.find_element(By.ID, "action-retry").click()
    shows(browser, ".notice", "retry: 1 recipient(s) changed")


def test_captured_html_with_an_inline_image(browser: Any, relay: RelayRunner) -> None:
    html = (
        '<h1 id="greeting">Welcome</h1><img id="logo" src="cid:logo@test" width="40" height="40">'
        '<img id="remote" src="http://203.0.113.9/track.png">'
        "<script>document.body.insertAdjacentHTML('beforeend', '<p id=ran>ran</p>')</script>"
    )
    send(relay, "dev@example.net", "Captured with an image", html, image=True)
    browser.get(relay.http_url + "/ui/captured")
    wait(
        lambda: browser.find_elements(By.LINK_TEXT, "Captured with an image") or browser.refresh(),
        timeout=15,
        what="the captured message",
    )
    shot(browser, "captured")
    browser.find_element(By.LINK_TEXT, "Captured with an image").click()
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.preview")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    try:
        logo = wait(lambda: browser.find_element(By.ID, "logo"), what="the preview")
        assert logo.get_attribute("src").startswith("data:image/png;base64,")
        wait(lambda: browser.execute_script("return arguments[0].naturalWidth", logo) == 1)
        assert browser.find_elements(By.ID, "ran") == []  # no script ran
        assert (
            browser.execute_script(
                "return arguments[0].naturalWidth", browser.find_element(By.ID, "remote")
            )
            == 0
        )  # remote images are off
    finally:
        browser.switch_to.default_content()
    assert "logo@test" in text(browser)  # listed as an inline part
    shot(browser, "captured-message")
    # Opened on its own (a link in a phishing mail, the login's next=), the mail's html is
    # not shown at the dashboard's address: the browser lands on the message's page.
    page = browser.current_url
    browser.get(page + "/html")
    wait(lambda: browser.current_url == page, what="the message page instead of its html")
    assert browser.find_elements(By.CSS_SELECTOR, "iframe.preview")


def test_add_and_remove_a_suppression(browser: Any, relay: RelayRunner) -> None:
    browser.get(relay.http_url + "/ui/suppressions")
    browser.find_element(By.ID, "add-address").send_keys("Blocked@Example.net")
    browser.find_element(By.ID, "add-note").send_keys("asked by support")
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/suppressions/add'] button").click()
    shows(browser, ".notice", "blocked@example.net is suppressed")
    assert relay.call(relay.store.suppressions.get("blocked@example.net")) is not None
    shot(browser, "suppressions")
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Remove blocked@example.net']").click()
    shows(browser, ".notice", "removed")
    assert relay.call(relay.store.suppressions.get("blocked@example.net")) is None


def test_a_notice_made_elsewhere_is_not_shown(browser: Any, relay: RelayRunner) -> None:
    """The text after an action comes back in the link; a link made by someone else (a
    mail to the operator, another site) cannot put its words on the dashboard."""
    forged = urllib.parse.urlencode({"done": "Your key was revoked: call +1 555 0100"})
    browser.get(relay.http_url + "/ui/suppressions?" + forged)
    wait(lambda: browser.find_elements(By.ID, "add-address"), what="the suppressions page")
    assert not browser.find_elements(By.CSS_SELECTOR, ".notice")
    assert "555 0100" not in browser.page_source
    # Signed for another session: not shown either.
    browser.get(relay.http_url + "/ui/suppressions?" + forged + "&sig=" + "0" * 32)
    wait(lambda: browser.find_elements(By.ID, "add-address"), what="the suppressions page")
    assert "555 0100" not in browser.page_source
    # A signature that is not even ASCII (it was a 500, or a reset connection).
    browser.get(relay.http_url + "/ui/suppressions?done=%C3%A9&sig=%C3%A9")
    wait(lambda: browser.find_elements(By.ID, "add-address"), what="the suppressions page")


def test_a_post_without_csrf_token_is_refused(browser: Any, relay: RelayRunner) -> None:
    browser.get(relay.http_url + "/ui/keys")
    shot(browser, "keys")
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/ui/suppressions/add', {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/x-www-form-urlencoded'},
          body: 'address=x%40example.net'}).then(r => done(r.status));"""
    )
    assert status == 403
    assert relay.call(relay.store.suppressions.get("x@example.net")) is None


def test_a_login_posted_from_another_site_is_refused(
    relay: RelayRunner, keys: dict[str, str]
) -> None:
    """A page on the same host (another port) can set the pre-login cookie to a pair it
    fetched itself and post the login form: the browser's Sec-Fetch-Site gives it away."""
    import re

    import httpx

    with httpx.Client(base_url=relay.http_url) as web:
        form = web.get("/ui/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None
        data = {"csrf": token.group(1), "key": keys["admin"], "next": "/ui/"}
        r = web.post("/ui/login", data=data, headers={"Sec-Fetch-Site": "same-site"})
        assert r.status_code == 403 and "did not come from the dashboard" in r.text
        r = web.post("/ui/login", data=data, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/"


def test_pages_send_security_headers(relay: RelayRunner) -> None:
    import httpx

    answer = httpx.get(relay.http_url + "/ui/login")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"


def test_phone_width_and_log_out(browser: Any, relay: RelayRunner) -> None:
    browser.set_window_size(390, 900)
    try:
        browser.get(relay.http_url + "/ui/messages")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        shot(browser, "messages-phone")
    finally:
        browser.set_window_size(1280, 1000)
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(lambda: "/ui/login" in browser.current_url, what="the login page")
    browser.get(relay.http_url + "/ui/messages")
    assert "/ui/login" in browser.current_url
    shot(browser, "login")
    assert SCREENSHOTS.is_dir()

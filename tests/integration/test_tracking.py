"""Open and click tracking and RFC 8058 one-click unsubscribe, end to end.

A real relay with a fake upstream and a DKIM key: mail goes out through the HTTP API, the
copies that arrive are checked with dkimpy, their pixel and links are followed with httpx
against the relay's listener, and the unsubscribe is made the ways mailbox providers do
(the one-click POST, the page's button, a mail to the mailto address over SMTP).
"""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest

from fakes.upstream import Received, Upstream
from mailgate.config import load_settings
from mailgate.delivery.dkim import generate_key
from mailgate.exceptions import ConfigError

PUBLIC = "https://mail.example.com"
HTML = (
    "<html><body><p>Hello <a href='https://shop.test/item?id=7&amp;ref=mail'>item</a>, "
    '<a href="mailto:help@example.com">mail us</a>, <a href="tel:+4912345">call</a>, '
    '<a href="#top">top</a>, <a data-mailgate-notrack href="https://private.test/x">own</a>'
    "</p></body></html>"
)
TEXT = "Hello, see https://shop.test/item?id=7. Bye."


@pytest.fixture
def keyfile(tmp_path: Path) -> tuple[Path, str]:
    pem, txt = generate_key("rsa", 2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    return path, txt


def start(relay_factory, tmp_path: Path, keyfile, upstream: Upstream, **extra: Any):  # type: ignore[no-untyped-def]
    path, _ = keyfile
    sections: dict[str, Any] = {
        "http": {"listen": ["127.0.0.1:0"], "public_url": PUBLIC},
        "domains": [
            {"name": "example.com", "dkim_selector": "s1", "dkim_key": str(path)},
            {"name": "example.org"},
        ],
        "providers": [
            {
                "name": "up",
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": upstream.port,
                "tls": "none",
            }
        ],
        "bounces": {"domain": "bounces.example.com"},
        **extra,
    }
    return relay_factory(**sections)


def client(relay) -> httpx.Client:  # type: ignore[no-untyped-def]
    key = relay.create_key("app")
    return httpx.Client(
        base_url=relay.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def send(api: httpx.Client, **fields: Any) -> str:
    body = {"from": "App <app@example.com>", "subject": "Hi", "html": HTML, "text": TEXT}
    body.update(fields)
    r = api.post("/v1/messages/send", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["id"])


def verify(data: bytes, txt: str) -> bool:
    return bool(dkim.DKIM(data).verify(dnsfunc=lambda name, timeout=5: txt.encode()))


def parts(got: Received) -> dict[str, str]:
    out = {}
    for part in got.message.walk():
        if part.get_content_maintype() == "text":
            out[part.get_content_type()] = part.get_payload(decode=True).decode()
    return out


def local(url: str, relay) -> str:  # type: ignore[no-untyped-def]
    """A link of the mail, pointed at the test relay instead of its public name."""
    assert url.startswith(PUBLIC + "/"), url
    return relay.http_url + url[len(PUBLIC) :]


def wait_events(relay, qid: str, kind: str, count: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in relay.events(qid) if e["type"] == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_tracked_copies_are_signed_per_recipient_and_links_produce_events(
    relay_factory, tmp_path: Path, keyfile
) -> None:  # type: ignore[no-untyped-def]
    _, txt = keyfile
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            qid = send(
                api, to=["a@dest.test", "b@dest.test"], tracking={"opens": True, "clicks": True}
            )
            got = sorted(up.wait_for(2), key=lambda g: g.rcpt_tos[0])
            # One transaction per recipient: each has its own copy.
            assert [g.rcpt_tos for g in got] == [["a@dest.test"], ["b@dest.test"]]
            assert got[0].data != got[1].data
            for g in got:
                assert verify(g.data, txt), "the signature covers the rewritten copy"
                signed = g.message["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
                h = re.search(r";h=([^;]+);", signed)
                assert h is not None
                fields = h.group(1).lower().split(":")
                assert "list-unsubscribe" in fields and "list-unsubscribe-post" in fields
                assert g.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            body = parts(got[0])
            html, text = body["text/html"], body["text/plain"]
            links = re.findall(r'href="([^"]+)"', html)
            tracked = [u for u in links if u.startswith(PUBLIC + "/t/c/")]
            assert len(tracked) == 1
            for kept in (
                "mailto:help@example.com",
                "tel:+4912345",
                "#top",
                "https://private.test/x",
            ):
                assert kept in links
            (pixel,) = re.findall(r'<img src="([^"]+/t/o/[^"]+)"', html)
            (text_link,) = re.findall(r"https://\S+/t/c/\S+(?=\. Bye)", text)

            web = httpx.Client(headers={"User-Agent": "TestMail/1.0"}, timeout=30)
            r = web.get(local(pixel, relay))
            assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
            assert "no-store" in r.headers["cache-control"]
            r = web.get(local(pixel, relay))  # a repeat is recorded too
            assert r.status_code == 200
            r = web.get(local(tracked[0], relay))
            assert r.status_code == 302
            assert r.headers["location"] == "https://shop.test/item?id=7&ref=mail"
            r = web.get(local(text_link, relay))
            assert r.headers["location"] == "https://shop.test/item?id=7"

            opened = wait_events(relay, qid, "opened", 2)
            clicked = wait_events(relay, qid, "clicked", 2)
            assert len(opened) == 2 and len(clicked) == 2
            assert {e["recipient"] for e in opened + clicked} == {"a@dest.test"}
            events = api.get(f"/v1/messages/{qid}/events").json()["data"]
            click_meta = [e["metadata"] for e in events if e["type"] == "clicked"]
            assert click_meta[0]["user_agent"] == "TestMail/1.0"
            assert click_meta[0]["ip"] == "127.0.0.1"
            assert click_meta[0]["url"] == "https://shop.test/item?id=7&ref=mail"
            data = api.get(f"/v1/messages/{qid}").json()["data"]
            assert data["opened_at"] is not None and data["opened_at"].endswith("Z")


def test_a_non_ascii_link_is_shown_as_written_and_redirects_as_a_uri(
    relay_factory, tmp_path: Path, keyfile
) -> None:  # type: ignore[no-untyped-def]
    """The click event names the link as the message wrote it; the redirect's Location is
    its URI form (IDNA host, UTF-8 percent-encoding), which every browser follows."""
    link = "https://例え.jp/パス?q=ü"
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            html = f'<p><a href="{link}">go</a></p>'
            qid = send(api, to=["a@dest.test"], html=html, tracking={"clicks": True})
            (got,) = up.wait_for(1)
            (tracked,) = re.findall(r'href="([^"]+/t/c/[^"]+)"', parts(got)["text/html"])
            r = httpx.get(local(tracked, relay), timeout=30)
            assert r.status_code == 302
            assert r.headers["location"] == "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%C3%BC"
            wait_events(relay, qid, "clicked", 1)
            events = api.get(f"/v1/messages/{qid}/events").json()["data"]
            (clicked,) = [e for e in events if e["type"] == "clicked"]
            assert clicked["metadata"]["url"] == link


def test_bad_tokens_are_404_and_there_is_no_open_redirect(
    relay_factory, tmp_path: Path, keyfile
) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            qid = send(api, to="a@dest.test", tracking={"clicks": True, "opens": True})
            (got,) = up.wait_for(1)
            html = parts(got)["text/html"]
            (link,) = [u for u in re.findall(r'href="([^"]+)"', html) if "/t/c/" in u]
            (pixel,) = re.findall(r'src="([^"]+/t/o/[^"]+)"', html)
        token = link.rsplit("/", 1)[1]
        web = httpx.Client(timeout=30)
        flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        for path in (
            f"/t/c/{flipped}",
            f"/t/c/{token[:40]}",
            "/t/c/" + "A" * 80,
            f"/t/o/{pixel.rsplit('/', 1)[1][:-1]}a",
            "/t/o/" + "a" * 50,
            "/u/" + "a" * 50,
            f"/u/{token}",  # a click token is no unsubscribe token
        ):
            r = web.get(relay.http_url + path)
            assert r.status_code == 404, path
            assert r.text == "Not Found" and "location" not in r.headers
        # An unsigned target in the query changes nothing: the signed one is used.
        r = web.get(local(link, relay) + "?url=https://evil.test/", follow_redirects=False)
        assert r.headers["location"] == "https://shop.test/item?id=7&ref=mail"
        assert not [e for e in relay.events(qid) if e["type"] == "clicked" and "evil" in e["data"]]


def test_one_click_post_as_mailbox_providers_send_it(
    relay_factory, tmp_path: Path, keyfile
) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            qid = send(api, to="reader@dest.test", tracking={"opens": True})
            (got,) = up.wait_for(1)
            header = got.message["List-Unsubscribe"].replace("\r\n", "").replace("\n", "")
            url, mailto = re.findall(r"<([^>]+)>", header)
            assert url.startswith(PUBLIC + "/u/")
            assert mailto.startswith("mailto:unsubscribe+") and mailto.endswith(
                "@bounces.example.com"
            )
            web = httpx.Client(timeout=30)
            # A link scanner's GET unsubscribes nobody.
            r = web.get(local(url, relay))
            assert r.status_code == 200 and '<form method="post"' in r.text
            assert "reader@dest.test" in r.text and "example.com" in r.text
            assert not [e for e in relay.events(qid) if e["type"] == "unsubscribed"]
            # Exactly what Gmail and Yahoo send (RFC 8058 section 3.1).
            r = web.post(
                local(url, relay),
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert r.status_code == 200
            r = web.post(local(url, relay), data={"List-Unsubscribe": "One-Click"})
            assert r.status_code == 200  # again: idempotent
            assert len([e for e in relay.events(qid) if e["type"] == "unsubscribed"]) == 1
            # The next accept leaves the address out, for this sending domain only.
            r = api.post(
                "/v1/messages/send",
                json={
                    "from": "app@example.com",
                    "to": "reader@dest.test",
                    "subject": "x",
                    "text": "y",
                },
            )
            assert r.status_code == 422 and r.json()["error"]["code"] == "recipient_suppressed"
            r = api.post(
                "/v1/messages/send",
                json={
                    "from": "app@example.org",
                    "to": "reader@dest.test",
                    "subject": "x",
                    "text": "y",
                },
            )
            assert r.status_code == 202
            # Over SMTP the refusal comes at RCPT, so the client learns of it (the address
            # was dropped from a message with other recipients, without a word).
            with smtplib.SMTP("127.0.0.1", relay.port(), timeout=30) as smtp:
                smtp.ehlo("client.test")
                assert smtp.mail("app@example.com")[0] == 250
                code, reply = smtp.rcpt("Reader@dest.test")
                assert (code, reply[:5]) == (550, b"5.7.1"), reply
                assert smtp.rcpt("other@dest.test")[0] == 250
                smtp.rset()
                assert smtp.mail("app@example.org")[0] == 250
                assert smtp.rcpt("reader@dest.test")[0] == 250  # another sending domain


def test_mailto_unsubscribe_over_smtp_without_auth(relay_factory, tmp_path: Path, keyfile) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up, smtp={"trusted_networks": []})
        with client(relay) as api:
            qid = send(api, to="reader@dest.test", tracking={"clicks": True})
            (got,) = up.wait_for(1)
            header = got.message["List-Unsubscribe"].replace("\r\n", "").replace("\n", "")
            mailto = re.findall(r"<mailto:([^>]+)>", header)[0]
            smtp = smtplib.SMTP("127.0.0.1", relay.port(), timeout=30)
            smtp.ehlo("mx.provider.test")
            assert smtp.mail("reader@dest.test")[0] == 250
            assert smtp.rcpt("someone@elsewhere.test")[0] == 530  # still no relaying
            assert (
                smtp.rcpt(mailto.upper().replace("@BOUNCES.EXAMPLE.COM", "@bounces.example.com"))[0]
                == 250
            )
            code, reply = smtp.data(b"Subject: unsubscribe\r\n\r\nunsubscribe\r\n")
            assert (code, reply) == (250, b"2.0.0 Unsubscribed")
            smtp.quit()
            (event,) = wait_events(relay, qid, "unsubscribed", 1)
            assert event["recipient"] == "reader@dest.test" and event["detail"] == "mailto"
            r = api.post(
                "/v1/messages/send",
                json={
                    "from": "app@example.com",
                    "to": "reader@dest.test",
                    "subject": "x",
                    "text": "y",
                },
            )
            assert r.status_code == 422


def test_untracked_mail_is_unchanged(relay_factory, tmp_path: Path, keyfile) -> None:  # type: ignore[no-untyped-def]
    _, txt = keyfile
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            qid = send(
                api, to=["a@dest.test", "b@dest.test"], tracking={"opens": False, "clicks": False}
            )
            (got,) = up.wait_for(1)
            assert sorted(got.rcpt_tos) == ["a@dest.test", "b@dest.test"]  # one transaction
            stored = relay.call(relay.store.get_message(qid))
            assert not stored["tracking"]  # stored as {}: nothing to add
        raw = relay.call(_raw(relay, qid))
        assert got.data.endswith(raw), "exactly the stored message after the signature"
        prefix = got.data[: -len(raw)]
        assert prefix.startswith(b"DKIM-Signature:") and prefix.count(b"\r\n ") >= 1
        assert not re.search(rb"\r\n[^ \t]", prefix[:-2]), "one folded header, nothing else"
        assert b"List-Unsubscribe" not in got.data and b"/t/" not in got.data
        assert verify(got.data, txt)


async def _raw(relay, qid: str) -> bytes:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from mailgate.store.schema import messages

    rows = await relay.store._read(select(messages.c.raw).where(messages.c.id == qid))
    return bytes(rows[0][0])


def test_tracking_needs_public_url(tmp_path: Path, relay_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ConfigError, match=r"\[http\] public_url is required when \[tracking\] opens"
    ):
        load_settings(
            data={
                "providers": [{"name": "c", "kind": "maildir", "path": "x"}],
                "tracking": {"opens": True},
            },
            environ={},
        )
    relay = relay_factory()  # no public_url: asking for tracking is refused, clearly
    with client(relay) as api:
        r = api.post(
            "/v1/messages/send",
            json={
                "from": "app@example.com",
                "to": "a@dest.test",
                "subject": "x",
                "text": "y",
                "tracking": {"opens": True},
            },
        )
        assert r.status_code == 422 and "public_url" in r.json()["error"]["message"]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_key_made_once_and_unsubscribes_shared_by_nodes(
    engine: str, tmp_path: Path, request
) -> None:  # type: ignore[no-untyped-def]
    """Two nodes starting at once agree on one key; an unsubscribe made through one node's
    store reaches the other's suppression list at its refresh."""
    import asyncio

    from mailgate.models import NewMessage
    from mailgate.store import Store
    from mailgate.suppression import SuppressionList

    url = (
        request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+asyncpg://")
        if engine == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
    )

    async def run() -> None:
        first = await Store.open(url)
        second = await Store.open(url) if engine == "postgresql" else first
        try:
            keys = await asyncio.gather(
                *(s.tracking.key(bytes([n]) * 32) for n, s in enumerate([first, second] * 4))
            )
            assert len(set(keys)) == 1
            await first.enqueue(
                [
                    NewMessage(
                        "01a23c00-0000-7000-8000-000000000001",
                        1.0,
                        "app@example.com",
                        ["Reader@dest.test"],
                        b"From: app@example.com\r\n\r\nx\r\n",
                    )
                ]
            )
            other = SuppressionList(second)
            await other.load()
            assert not other.unsubscribes
            done = await first.tracking.unsubscribe(
                "01a23c00-0000-7000-8000-000000000001", 0, 2.0, "one-click", "{}"
            )
            assert (
                done is not None
                and done.new
                and (done.address, done.domain)
                == (
                    "reader@dest.test",
                    "example.com",
                )
            )
            again = await first.tracking.unsubscribe(
                "01a23c00-0000-7000-8000-000000000001", 0, 3.0, "one-click", "{}"
            )
            assert again is not None and not again.new
            await other.load()  # what its refresh task does every few seconds
            assert ("reader@dest.test", "example.com") in other.unsubscribes
            events = await first.events_of("01a23c00-0000-7000-8000-000000000001")
            assert [e["type"] for e in events].count("unsubscribed") == 1
        finally:
            await first.close()
            if second is not first:
                await second.close()

    asyncio.run(run())


def test_batch_mail_is_bulk_and_gets_list_unsubscribe(
    relay_factory, tmp_path: Path, keyfile
) -> None:  # type: ignore[no-untyped-def]
    _, txt = keyfile
    with Upstream() as up:
        relay = start(relay_factory, tmp_path, keyfile, up)
        with client(relay) as api:
            r = api.post(
                "/v1/messages/batch",
                json={
                    "messages": [
                        {
                            "from": "app@example.com",
                            "to": "a@dest.test",
                            "subject": "news",
                            "html": HTML,
                        },
                        {
                            "from": "app@example.com",
                            "to": "b@dest.test",
                            "subject": "receipt",
                            "text": TEXT,
                            "tracking": {"opens": False, "clicks": False},
                        },
                    ]
                },
            )
            assert r.status_code == 202, r.text
            got = {g.rcpt_tos[0]: g for g in up.wait_for(2)}
        bulk, transactional = got["a@dest.test"], got["b@dest.test"]
        assert bulk.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert b"/t/o/" not in bulk.data and b"/t/c/" not in bulk.data  # not tracked
        assert verify(bulk.data, txt)
        assert b"List-Unsubscribe" not in transactional.data and b"/t/c/" not in transactional.data

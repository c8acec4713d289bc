"""Story: recipients mark mail as spam; their mailbox providers' feedback loops send ARF
reports over SMTP to the bounce (VERP) address or the complaints address. Each report that
names a delivery becomes a "complained" event and suppresses the address; a malformed one
is taken (250) and dropped."""

from __future__ import annotations

import smtplib
import time

import httpx

from fakes import arf
from fakes.upstream import Upstream

BOUNCES = "bounces.example.com"
FBL = "fbl@example.com"


def _send(relay, up: Upstream, rcpts: list[str], n: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Send one message; its queue id and Message-ID once it has gone out."""
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.sendmail("app@example.com", rcpts, f"Subject: deals {n}\r\n\r\nBuy\r\n".encode())
    got = up.wait_for(n)
    qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    assert len(got) >= n
    return qid, relay.message(qid)["message_id_header"]


def _report(relay, data: bytes, rcpt: str, sender: str = "fbl@isp.example") -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("feedback.isp.example")
        assert c.mail(sender)[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        return c.data(data)


def _complaints(relay, qid: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [e for e in relay.events(qid) if e["type"] == "complained"]


def _wait_complaint(relay, qid: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _complaints(relay, qid)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no complaint recorded for {qid}")


def test_feedback_loop_reports_over_smtp(relay_factory) -> None:  # type: ignore[no-untyped-def]
    with Upstream() as up:
        relay = relay_factory(
            providers=[
                {"name": "up", "kind": "smtp", "host": "127.0.0.1", "port": up.port, "tls": "none"}
            ],
            bounces={"verp": True, "domain": BOUNCES, "complaints_address": FBL},
        )
        sent = 0

        # Yahoo/AOL CFL to the complaints address: matched by Original-Mail-From (VERP).
        sent += 2
        qid, mid = _send(relay, up, ["y1@yahoo.test", "y2@yahoo.test"], sent)
        code, msg = _report(
            relay,
            arf.yahoo_cfl(mid, f"bounces+{qid}.1@{BOUNCES}"),
            FBL,
            sender="feedback@arf.mail.yahoo.com",
        )
        assert (code, msg) == (250, b"2.0.0 Report received")
        event = _wait_complaint(relay, qid)
        assert (event["recipient"], event["rcpt_idx"]) == ("y2@yahoo.test", 1)
        assert event["detail"] == "abuse report from Yahoo!-Mail-Feedback/2.0"
        entry = relay.call(relay.store.suppressions.get("y2@yahoo.test"))
        assert entry is not None and entry.reason == "complaint" and entry.message_id == qid
        assert relay.call(relay.store.suppressions.get("y1@yahoo.test")) is None
        key = relay.create_key("reader", scope="read")
        with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as h:
            events = h.get(f"/v1/messages/{qid}/events").json()["data"]
        assert [e["recipient"] for e in events if e["type"] == "complained"] == ["y2@yahoo.test"]
        assert relay.statuses(qid) == {"y1@yahoo.test": "sent", "y2@yahoo.test": "sent"}

        # Microsoft JMRP-like, no Original-Mail-From: matched by Message-ID (one recipient).
        sent += 1
        qid, mid = _send(relay, up, ["someone@hotmail.test"], sent)
        _report(relay, arf.microsoft_jmrp(mid, "someone@hotmail.test"), FBL, "staff@hotmail.com")
        assert _wait_complaint(relay, qid)["recipient"] == "someone@hotmail.test"
        assert relay.call(relay.store.suppressions.get("someone@hotmail.test")) is not None

        # Mail.ru sends to the VERP return path itself, with the null sender.
        sent += 2
        qid, mid = _send(relay, up, ["m1@mail.test", "m2@mail.test"], sent)
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.sendmail("<>", [f"bounces+{qid}.0@{BOUNCES}"], arf.mail_ru(mid, "m1@mail.test"))
        assert _wait_complaint(relay, qid)["recipient"] == "m1@mail.test"

        # text/rfc822-headers original: Message-ID and Original-Rcpt-To pick the recipient.
        sent += 2
        qid, mid = _send(relay, up, ["h1@dest.test", "h2@dest.test"], sent)
        _report(relay, arf.headers_part(mid, "h2@dest.test"), FBL)
        assert _wait_complaint(relay, qid)["recipient"] == "h2@dest.test"

        # One recipient: a report naming an address of another domain is about another
        # message with the same Message-ID (it is the client's), not this one; a redacted
        # address (RFC 6590 keeps the domain) is still this recipient's.
        sent += 1
        qid, mid = _send(relay, up, ["single@dest.test"], sent)
        _report(relay, arf.headers_part(mid, "someone-else@other.test"), FBL)
        time.sleep(0.3)
        assert _complaints(relay, qid) == []
        assert relay.call(relay.store.suppressions.get("single@dest.test")) is None
        _report(relay, arf.headers_part(mid, "x9f3a@dest.test"), FBL)
        assert _wait_complaint(relay, qid)["recipient"] == "single@dest.test"

        # A headers-only original (no body), fraud type.
        sent += 1
        qid, mid = _send(relay, up, ["trim@dest.test"], sent)
        _report(relay, arf.only_headers(mid, "trim@dest.test"), FBL)
        assert _wait_complaint(relay, qid)["detail"] == "fraud report from Trimmer/2"

        # Taken and dropped: garbage, no Feedback-Type, not-spam, an unknown Message-ID,
        # a multi-recipient message with the recipient redacted, plain text to the address.
        sent += 2
        qid, mid = _send(relay, up, ["d1@dest.test", "d2@dest.test"], sent)
        for data in (
            arf.GARBAGE,
            arf.no_feedback_type(mid, "d1@dest.test"),
            arf.not_spam(mid, "d1@dest.test"),
            arf.microsoft_jmrp("<unknown@nowhere.example>", "d1@dest.test"),
            arf.microsoft_jmrp(mid, "redacted"),
            b"Subject: hello\r\n\r\nnot a report\r\n",
        ):
            code, _ = _report(relay, data, FBL)
            assert code == 250
        time.sleep(0.3)
        assert _complaints(relay, qid) == []
        assert relay.call(relay.store.suppressions.get("d1@dest.test")) is None

        # The relay still works after all of that, and the complained addresses are refused.
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
            c.ehlo("client.test")
            c.mail("app@example.com")
            assert c.rcpt("y2@yahoo.test")[0] == 550
            assert c.rcpt("ok@dest.test")[0] == 250


def test_report_addresses_do_not_open_the_relay(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(bounces={"complaints_address": FBL})
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("feedback.isp.example")
        assert c.mail("feedback@arf.mail.yahoo.com")[0] == 250  # the refusal waits for RCPT
        code, msg = c.rcpt("someone@elsewhere.test")
        assert (code, msg[:5]) == (553, b"5.7.1")
        assert c.rcpt(FBL)[0] == 250  # the complaints address takes reports from anyone
        c.rset()
        assert c.mail("app@example.com")[0] == 250  # a submission from a trusted client
        assert c.rcpt(FBL)[0] == 250
        assert c.rcpt("someone@elsewhere.test")[0] == 550  # never in the same transaction

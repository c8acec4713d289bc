"""The analyze checks, one by one: each fires on its problem and stays quiet without it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import build_settings
from fakes.dns import DnsServer
from mailgate.analysis import (
    attachment_checks,
    bulk_checks,
    issues,
    link_checks,
    message_checks,
)
from mailgate.analysis.checks import run_checks
from mailgate.analysis.dns_checks import DnsChecker, dkim_issue
from mailgate.analysis.draft import AttachmentFacts, Draft, from_mime
from mailgate.analysis.html_scan import scan
from mailgate.analysis.report import grade, report
from mailgate.mime import Attachment, Mailbox, MessageSpec, build

GOOD_HTML = (
    "<html><body><h1>Your order</h1><p>Hi Ann, your order 1234 has shipped and is on "
    "its way. You can follow it on <a href='https://shop.example.com/track/1234'>the "
    "tracking page</a>. Thank you for shopping with us, and see you soon.</p></body></html>"
)
GOOD_TEXT = "Your order\n\nHi Ann, your order 1234 has shipped: https://shop.example.com/t/1"


def draft(**kw: object) -> Draft:
    values: dict[str, object] = {
        "sender": "hello@example.com",
        "subject": "Your order has shipped",
        "html": GOOD_HTML,
        "text": GOOD_TEXT,
        "headers": {},
    }
    values.update(kw)
    return Draft(**values)  # type: ignore[arg-type]


def subtypes(d: Draft) -> list[str]:
    return [i.subtype for i in run_checks(d)]


def test_a_clean_message_has_no_issue() -> None:
    assert run_checks(draft()) == []


def test_missing_text() -> None:
    (issue,) = message_checks.missing_text(draft(text=""))
    assert (issue.type, issue.subtype, issue.severity, issue.penalty) == (
        "content",
        "missing_text",
        "medium",
        5,
    )
    assert issue.detail == "No plain text version"
    assert message_checks.missing_text(draft()) == []
    assert message_checks.missing_text(draft(html="", text="only text")) == []


def test_subject_long_and_all_caps() -> None:
    assert [i.subtype for i in message_checks.subject(draft(subject="x" * 79))] == [
        "subject_too_long"
    ]
    assert message_checks.subject(draft(subject="x" * 78)) == []
    caps = message_checks.subject(draft(subject="YOUR ORDER HAS SHIPPED"))
    assert [(i.subtype, i.severity) for i in caps] == [("subject_all_caps", "medium")]
    assert message_checks.subject(draft(subject="Your ORDER 1234")) == []
    assert message_checks.subject(draft(subject="OK 123")) == []  # too few letters to shout


def test_spam_phrases() -> None:
    body = draft(text="Act now! This is a limited time offer, 100% free. Click here.")
    (issue,) = message_checks.spam_phrases(body)
    assert issue.severity == "medium" and '"act now"' in issue.detail
    assert '"limited time offer"' in issue.detail and '"100% free"' in issue.detail
    (subject,) = message_checks.spam_phrases(draft(subject="You have won!!!"))
    assert subject.severity == "medium" and "runs of !" in subject.detail
    (mild,) = message_checks.spam_phrases(draft(text="It is urgent, sorry."))
    assert mild.severity == "low"
    assert message_checks.spam_phrases(draft(text="Our winnerships are urgently needed")) == []


def test_image_to_text_ratio() -> None:
    imgs = "".join(f"<img src='https://example.com/{i}.png'>" for i in range(3))
    (issue,) = message_checks.image_ratio(draft(html=f"<p>Sale</p>{imgs}"))
    assert (issue.subtype, issue.severity) == ("image_text_ratio", "high")
    medium = message_checks.image_ratio(draft(html=f"<p>{'word ' * 30}</p>{imgs}"))
    assert [i.severity for i in medium] == ["medium"]
    assert message_checks.image_ratio(draft(html=f"<p>{'word ' * 200}</p>{imgs}")) == []
    assert message_checks.image_ratio(draft()) == []


def test_link_domains_other_than_from() -> None:
    html = (
        "<a href='https://www.example.com/a'>own</a><a href='https://evil.test/x'>x</a>"
        "<a href='mailto:a@b.test'>m</a><a href='#top'>top</a>"
    )
    (issue,) = link_checks.link_domains(draft(html=html))
    assert (issue.subtype, issue.severity) == ("link_domain_mismatch", "low")
    assert "evil.test" in issue.detail and "example.com" in issue.detail
    many = "".join(f"<a href='https://site{i}.test/'>l</a>" for i in range(4))
    assert [i.severity for i in link_checks.link_domains(draft(html=many))] == ["medium"]
    (ip,) = link_checks.link_domains(draft(html="<a href='http://192.0.2.7/login'>x</a>"))
    assert ip.subtype == "ip_address_link"
    assert link_checks.link_domains(draft(html="<a href='https://news.example.com/x'>y</a>")) == []
    uk = draft(
        sender="a@shop.example.co.uk", html="<a href='https://www.example.co.uk/'>y</a>", text=""
    )
    assert link_checks.link_domains(uk) == []


def test_url_shorteners() -> None:
    (issue,) = link_checks.url_shorteners(draft(text="See https://bit.ly/3abc and http://t.co/x"))
    assert (issue.subtype, issue.severity) == ("url_shortener", "high")
    assert issue.detail.endswith("bit.ly, t.co")
    assert (
        link_checks.url_shorteners(draft(html="<a href='https://bitly.example.com/'>x</a>")) == []
    )


def test_no_unsubscribe_on_bulk_mail() -> None:
    (tagged,) = bulk_checks.unsubscribe(draft(tags=["Newsletter"]))
    assert (tagged.subtype, tagged.severity) == ("missing_unsubscribe", "high")
    many = bulk_checks.unsubscribe(draft(recipients=bulk_checks.BULK_RECIPIENTS))
    assert [i.subtype for i in many] == ["missing_unsubscribe"]
    listed = bulk_checks.unsubscribe(draft(headers={"precedence": "bulk"}))
    assert [i.subtype for i in listed] == ["missing_unsubscribe"]
    link = bulk_checks.unsubscribe(draft(tags=["marketing"], text="Unsubscribe: https://x"))
    assert [i.severity for i in link] == ["medium"]
    header = {"list-unsubscribe": "<https://example.com/u/1>"}
    assert bulk_checks.unsubscribe(draft(tags=["newsletter"], headers=header)) == []
    assert bulk_checks.unsubscribe(draft(tags=["transactional"], recipients=3)) == []


def test_gmail_clipping() -> None:
    big = "<p>" + "a" * (message_checks.GMAIL_CLIP_BYTES + 1) + "</p>"
    (issue,) = message_checks.gmail_clipping(draft(html=big))
    assert (issue.type, issue.subtype) == ("size", "gmail_clipping")
    assert message_checks.gmail_clipping(draft(html="<p>" + "a" * 100_000 + "</p>")) == []


def test_broken_html() -> None:
    (issue,) = message_checks.broken_html(draft(html="<div><b>bold</div><span>open"))
    assert issue.subtype == "broken_html"
    assert "<b> is not closed before </div>" in issue.detail
    assert "<span> is never closed" in issue.detail
    (stray,) = message_checks.broken_html(draft(html="<p>x</p></table>"))
    assert "</table> closes no open <table>" in stray.detail
    ok = "<table><tr><td>a<td>b</table><p>one<p>two<br><img src=x.png><hr/>"
    assert message_checks.broken_html(draft(html=ok)) == []


def test_script_and_form() -> None:
    html = "<p>x</p><script>alert(1)</script><form action='https://x'><input></form>"
    found = {(i.subtype, i.severity) for i in message_checks.active_content(draft(html=html))}
    assert found == {("script", "high"), ("form", "medium")}
    frame = message_checks.active_content(draft(html="<iframe src='https://x'></iframe>"))
    assert [i.subtype for i in frame] == ["embedded_content"]
    assert message_checks.active_content(draft()) == []


def test_risky_attachments() -> None:
    def att(name: str, ctype: str = "application/octet-stream") -> AttachmentFacts:
        return AttachmentFacts(name, ctype, 10)

    for name in ("setup.exe", "a.JS", "x.scr", "run.bat", "m.vbs", "app.jar", "disk.iso"):
        (issue,) = attachment_checks.risky_attachments(draft(attachments=[att(name)]))
        assert (issue.subtype, issue.severity, issue.penalty) == ("risky_attachment", "high", 25)
    (macro,) = attachment_checks.risky_attachments(draft(attachments=[att("Budget.xlsm")]))
    assert "macro" in macro.detail and macro.penalty == 20
    (typed,) = attachment_checks.risky_attachments(
        draft(attachments=[att("x", "application/x-msdownload")])
    )
    assert "application/x-msdownload" in typed.detail
    safe = [att("invoice.pdf", "application/pdf"), att("a.docx"), att("logo.png", "image/png")]
    assert attachment_checks.risky_attachments(draft(attachments=safe)) == []
    assert attachment_checks.risky_attachments(draft(attachments=[att("invoice.pdf.exe")]))


def test_dkim_key_configured(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("unused")
    settings = build_settings(
        tmp_path,
        domains=[
            {"name": "signed.test", "dkim_selector": "s1", "dkim_key": str(tmp_path / "k.pem")},
            {"name": "plain.test"},
        ],
    )
    assert dkim_issue(settings, "signed.test") == []
    (issue,) = dkim_issue(settings, "plain.test")
    assert (issue.type, issue.subtype, issue.severity) == ("authentication", "missing_dkim", "high")


def test_spf_and_dmarc_from_dns_cached(tmp_path: Path) -> None:
    with DnsServer() as d:
        d.add("good.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
        d.add("_dmarc.good.test", "TXT", "v=DMARC1; p=reject")
        d.add("sub.org.test", "TXT", "v=spf1 -all")
        d.add("_dmarc.org.test", "TXT", "v=DMARC1; p=none")  # the organizational domain's
        d.add("bare.test", "TXT", "google-site-verification=abc")
        d.add("twice.test", "TXT", "v=spf1 -all")
        d.add("twice.test", "TXT", "v=spf1 ~all")
        d.add("_dmarc.twice.test", "TXT", "v=DMARC1; p=none")
        d.set_timeout("dead.test")
        d.set_timeout("_dmarc.dead.test")
        settings = build_settings(tmp_path, dns={"nameservers": [d.nameserver]})

        async def run() -> dict[str, list[str]]:
            checker = DnsChecker(settings)
            out = {}
            for name in ("good.test", "sub.org.test", "bare.test", "twice.test", "gone.test"):
                out[name] = [i.subtype for i in await checker.check(name)]
            started = time.monotonic()
            dead = await checker.check("dead.test")
            out["dead.test"] = [f"{i.subtype}:{i.severity}" for i in dead]
            out["dead_seconds"] = [f"{time.monotonic() - started:.1f}"]
            await checker.check("good.test")  # from the cache
            return out

        out = asyncio.run(run())
        assert d.count("good.test", "TXT") == 1
    assert out["good.test"] == []
    assert out["sub.org.test"] == []
    assert out["bare.test"] == ["missing_spf", "missing_dmarc"]
    assert out["twice.test"] == ["multiple_spf"]
    assert out["gone.test"] == ["missing_spf", "missing_dmarc"]
    assert out["dead.test"] == ["spf_unchecked:info", "dmarc_unchecked:info"]
    assert float(out["dead_seconds"][0]) <= 2.5


def test_html_scan_collects_links_images_text() -> None:
    facts = scan(
        "<html><head><title>t</title><style>p{}</style></head><body><p>Hello <b>you</b></p>"
        "<img src='a.png'><a href=' https://example.com/x '>go</a><script>var x</script>"
    )
    assert facts.links == ["https://example.com/x"]
    assert facts.images == 1 and facts.text == "Hello you go"
    assert facts.active == {"script": 1}


def test_draft_from_mime_sees_parts_and_attachments() -> None:
    data = build(
        MessageSpec(
            sender=Mailbox("hello@example.com"),
            to=[Mailbox("a@example.net")],
            cc=[],
            subject="Hi",
            html="<p>Hi</p>",
            text="",
            headers=[("List-Unsubscribe", "<https://example.com/u>")],
            attachments=[
                Attachment("tool.exe", b"MZ" * 10, "application/octet-stream", ""),
                Attachment("résumé déjà.docm", b"PK", "application/octet-stream", ""),
            ],
        )
    )
    d = from_mime(
        data, sender="hello@example.com", subject="Hi", recipients=1, tags=[], size=len(data)
    )
    assert d.html.strip() == "<p>Hi</p>" and d.text == ""
    assert d.headers["list-unsubscribe"] == "<https://example.com/u>"
    assert [(a.filename, a.size) for a in d.attachments] == [
        ("tool.exe", 20),
        ("résumé déjà.docm", 2),
    ]
    assert subtypes(d) == ["missing_text", "risky_attachment", "risky_attachment"]


def test_report_scores_grades_and_counts() -> None:
    (missing,) = message_checks.missing_text(draft(text=""))
    data = report([missing])
    assert data == {
        "score": 95,
        "grade": "good",
        "issues_count": 1,
        "critical_count": 0,
        "high_count": 0,
        "medium_count": 1,
        "low_count": 0,
        "info_count": 0,
        "can_send": True,
        "recommendations": ["Consider adding a text version for better deliverability"],
        "issues": [
            {
                "type": "content",
                "subtype": "missing_text",
                "severity": "medium",
                "detail": "No plain text version",
                "penalty": 5,
            }
        ],
    }
    assert report([])["grade"] == "excellent" and report([])["score"] == 100
    assert grade(100, [issues.Issue("a", "b", "critical", "", 0)]) == "poor"
    assert grade(95, [issues.Issue("a", "b", "high", "", 5)]) == "fair"
    assert grade(85, [issues.Issue("a", "b", "low", "", 15)]) == "good"
    assert grade(40, []) == "poor"


def test_checks_are_deterministic() -> None:
    """(Their speed is measured by scripts/bench-http's analyze scenario, not here: a timed
    test fails on a loaded machine.)"""
    html = (
        "<html><body>"
        + "".join(
            f"<p>Paragraph {i} with a <a href='https://example.com/p/{i}'>link</a> and "
            f"<a href='https://partner{i % 7}.test/'>partner</a>.</p><img src='cid:i{i}'>"
            for i in range(150)
        )
        + "</body></html>"
    )
    d = draft(html=html, text="", tags=["newsletter"], subject="BIG NEWS: act now!!!")
    first = report(run_checks(d))
    for _ in range(3):
        fresh = draft(html=html, text="", tags=["newsletter"], subject=d.subject)
        assert report(run_checks(fresh)) == first

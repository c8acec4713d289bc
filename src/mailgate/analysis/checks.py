"""The content checks: pure functions from a Draft to the issues they find.

Each check is deterministic (same draft, same issues in the same order) and cheap: the
html is parsed once (Draft.html_facts) and every check reads that. Penalties and
severities are ours; they follow what the large mailbox providers publish (Gmail's
sender guidelines, Gmail's 102 KB clipping and blocked attachment types) and the usual
content-filter rules (SpamAssassin's subject, image-ratio and phrase rules).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailgate.analysis.draft import Draft

SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True, slots=True)
class Issue:
    type: str
    subtype: str
    severity: str  # one of SEVERITIES
    detail: str
    penalty: int
    recommendation: str = ""

    def public(self) -> dict[str, object]:
        return {
            "type": self.type,
            "subtype": self.subtype,
            "severity": self.severity,
            "detail": self.detail,
            "penalty": self.penalty,
        }


Check = Callable[[Draft], list[Issue]]

# ----------------------------------------------------------------------- content

SUBJECT_MAX = 78  # RFC 5322's line length; most clients show ~40-60 characters
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" above this much html
MIN_TEXT_PER_IMAGE = 200  # visible characters per image below which the mail is image-heavy


def missing_text(d: Draft) -> list[Issue]:
    """An html-only message: spam filters score it, and text-only clients show nothing."""
    if d.html and not d.text.strip():
        return [
            Issue(
                "content",
                "missing_text",
                "medium",
                "No plain text version",
                5,
                "Consider adding a text version for better deliverability",
            )
        ]
    return []


def subject(d: Draft) -> list[Issue]:
    """Too long, or shouting (a missing subject is send's missing_subject error)."""
    s = d.subject.strip()
    out: list[Issue] = []
    if not s:
        return []  # send refuses it: a validation issue (missing_subject)
    if len(s) > SUBJECT_MAX:
        out.append(
            Issue(
                "subject",
                "subject_too_long",
                "low",
                f"The subject has {len(s)} characters (more than {SUBJECT_MAX})",
                3,
                "Keep the subject short: mail clients cut it at about 60 characters",
            )
        )
    letters = [c for c in s if c.isalpha()]
    if len(letters) >= 5 and all(c.isupper() for c in letters):
        out.append(
            Issue(
                "subject",
                "subject_all_caps",
                "medium",
                "The subject is written in capitals only",
                10,
                "Write the subject in sentence case: all capitals reads as spam",
            )
        )
    return out


SPAM_PHRASES = (
    "100% free",
    "act now",
    "all natural",
    "apply now",
    "as seen on",
    "best price",
    "buy now",
    "call now",
    "cash bonus",
    "cheap meds",
    "click below",
    "click here",
    "congratulations you",
    "double your",
    "earn money",
    "extra cash",
    "fast cash",
    "free gift",
    "free money",
    "get paid",
    "guaranteed",
    "increase sales",
    "limited time offer",
    "lose weight",
    "make money",
    "million dollars",
    "miracle",
    "no credit check",
    "no obligation",
    "once in a lifetime",
    "order now",
    "risk-free",
    "risk free",
    "special promotion",
    "this is not spam",
    "urgent",
    "viagra",
    "winner",
    "work from home",
    "you have been selected",
    "you've won",
    "you have won",
)
_PHRASES = re.compile(
    r"(?<!\w)(" + "|".join(re.escape(p) for p in SPAM_PHRASES) + r")(?!\w)", re.IGNORECASE
)
_SHOUTY = re.compile(r"[!?$]{3,}")


def spam_phrases(d: Draft) -> list[Issue]:
    """Phrases content filters weigh; the subject counts most."""
    body = d.text or d.html_facts.text
    found = sorted({m.lower() for m in _PHRASES.findall(d.subject)})
    found += sorted({m.lower() for m in _PHRASES.findall(body)} - set(found))
    shouty = bool(_SHOUTY.search(d.subject))
    if not found and not shouty:
        return []
    in_subject = bool(_PHRASES.search(d.subject)) or shouty
    severity = "medium" if len(found) >= 3 or in_subject else "low"
    what = ", ".join(f'"{p}"' for p in found[:8])
    if shouty:
        what = (what + ", " if what else "") + "runs of !, ? or $ in the subject"
    return [
        Issue(
            "content",
            "spam_phrases",
            severity,
            f"Phrases that spam filters score: {what}",
            min(3 * (len(found) + shouty) + (5 if in_subject else 0), 20),
            "Rephrase sales language, especially in the subject",
        )
    ]


def image_ratio(d: Draft) -> list[Issue]:
    """Mostly images and little text is a classic spam shape (and unreadable when images
    are blocked, which many clients do by default)."""
    facts = d.html_facts if d.html else None
    if facts is None or facts.images == 0:
        return []
    chars = len(facts.text)
    if chars >= MIN_TEXT_PER_IMAGE * facts.images:
        return []
    severity, penalty = ("high", 15) if chars < 50 else ("medium", 10)
    return [
        Issue(
            "content",
            "image_text_ratio",
            severity,
            f"{facts.images} image(s) for {chars} characters of text",
            penalty,
            f"Add text: at least {MIN_TEXT_PER_IMAGE} characters per image",
        )
    ]


def gmail_clipping(d: Draft) -> list[Issue]:
    """Gmail hides everything after the first ~102 KB of html behind "View entire
    message" (the unsubscribe link and any open pixel with it)."""
    body = d.html or d.text
    size = len(body.encode("utf-8", "surrogatepass"))
    if size <= GMAIL_CLIP_BYTES:
        return []
    return [
        Issue(
            "size",
            "gmail_clipping",
            "medium",
            f"The {'html' if d.html else 'text'} body is {size} bytes; Gmail clips "
            f"messages over {GMAIL_CLIP_BYTES} bytes",
            10,
            "Keep the html under 102 KB: drop inline CSS and comments, link to long content",
        )
    ]


# ----------------------------------------------------------------------- links

URL_SHORTENERS = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "buff.ly",
        "cutt.ly",
        "goo.gl",
        "is.gd",
        "lnkd.in",
        "ow.ly",
        "rb.gy",
        "rebrand.ly",
        "s.id",
        "shorturl.at",
        "t.co",
        "t.ly",
        "tiny.cc",
        "tinyurl.com",
        "trib.al",
        "v.gd",
        "bl.ink",
        "soo.gd",
        "shorte.st",
        "adf.ly",
        "x.co",
    }
)
# Second-level labels under which registries sell names (co.uk, com.au, ...): the
# registrable domain then has three labels. A short list, not the Public Suffix List.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "gob"})
_URL_IN_TEXT = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)


def _links(d: Draft) -> list[str]:
    links = list(d.html_facts.links) if d.html else []
    if d.text:
        links += _URL_IN_TEXT.findall(d.text)
    return links


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https"):
        return ""
    try:
        return (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


def organizational_domain(host: str) -> str:
    """example.com for www.mail.example.com, example.co.uk for a.example.co.uk."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def link_domains(d: Draft) -> list[Issue]:
    """Links to other domains than From's: fine in moderation, but a mismatch is what
    phishing looks like, and the reputation of every linked domain counts."""
    if not d.from_domain:
        return []
    own = organizational_domain(d.from_domain)
    foreign: set[str] = set()
    ips: set[str] = set()
    for url in _links(d):
        host = _host(url)
        if not host:
            continue
        if _is_ip(host):
            ips.add(host)
        elif organizational_domain(host) != own and host not in URL_SHORTENERS:
            foreign.add(organizational_domain(host))
    out: list[Issue] = []
    if ips:
        out.append(
            Issue(
                "links",
                "ip_address_link",
                "high",
                "Links to bare IP addresses: " + ", ".join(sorted(ips)[:5]),
                15,
                "Link to a domain name, never to an IP address",
            )
        )
    if foreign:
        names = sorted(foreign)
        out.append(
            Issue(
                "links",
                "link_domain_mismatch",
                "low" if len(names) <= 2 else "medium",
                f"Links to {len(names)} domain(s) other than {own}: " + ", ".join(names[:5]),
                2 if len(names) <= 2 else 5,
                f"Link mostly to your own domain ({own})",
            )
        )
    return out


def url_shorteners(d: Draft) -> list[Issue]:
    """Shortened links hide the destination; filters treat them as spam signals."""
    found = sorted({h for h in (_host(u) for u in _links(d)) if h in URL_SHORTENERS})
    if not found:
        return []
    return [
        Issue(
            "links",
            "url_shortener",
            "high",
            "Links through URL shorteners: " + ", ".join(found),
            15,
            "Use full links to your own domain instead of URL shorteners",
        )
    ]


# ----------------------------------------------------------------------- compliance

BULK_TAGS = frozenset(
    {
        "announcement",
        "bulk",
        "campaign",
        "digest",
        "marketing",
        "newsletter",
        "promo",
        "promotion",
        "promotional",
    }
)
BULK_RECIPIENTS = 20  # one message to this many addresses (to + cc + bcc) is a mailing
_UNSUBSCRIBE_WORD = re.compile(r"unsubscribe|opt[- ]?out", re.IGNORECASE)


def is_bulk(d: Draft) -> str:
    """Why the message is bulk mail ("" if it is not): a marketing tag, a Precedence:
    bulk/list header, or at least BULK_RECIPIENTS recipients."""
    tags = sorted({t.lower() for t in d.tags} & BULK_TAGS)
    if tags:
        return f"tagged {tags[0]!r}"
    precedence = d.headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if d.recipients >= BULK_RECIPIENTS:
        return f"{d.recipients} recipients"
    return ""


def unsubscribe(d: Draft) -> list[Issue]:
    """Bulk mail without List-Unsubscribe: Gmail and Yahoo require one-click unsubscribe
    (RFC 8058) from bulk senders since 2024."""
    why = is_bulk(d)
    if not why or d.headers.get("list-unsubscribe", "").strip():
        return []
    has_link = bool(_UNSUBSCRIBE_WORD.search(d.text) or _UNSUBSCRIBE_WORD.search(d.html))
    detail = f"Bulk mail ({why}) without a List-Unsubscribe header"
    if has_link:
        detail += " (the body has an unsubscribe link)"
    return [
        Issue(
            "compliance",
            "missing_unsubscribe",
            "medium" if has_link else "high",
            detail,
            10 if has_link else 15,
            "Add List-Unsubscribe and List-Unsubscribe-Post: List-Unsubscribe=One-Click "
            "headers to bulk mail",
        )
    ]


# ----------------------------------------------------------------------- html

ACTIVE_SEVERITY = {
    "script": ("high", 20, "Remove scripts: no mail client runs them and filters penalize them"),
    "form": ("medium", 10, "Link to a form on your site instead of embedding one"),
    "iframe": ("medium", 10, "Remove embedded frames and objects: mail clients block them"),
    "object": ("medium", 10, "Remove embedded frames and objects: mail clients block them"),
    "embed": ("medium", 10, "Remove embedded frames and objects: mail clients block them"),
    "applet": ("medium", 10, "Remove embedded frames and objects: mail clients block them"),
}


def broken_html(d: Draft) -> list[Issue]:
    """Unclosed or mismatched tags render differently in every client and are scored."""
    if not d.html or not d.html_facts.problems:
        return []
    return [
        Issue(
            "html",
            "broken_html",
            "medium",
            "Malformed html: " + "; ".join(d.html_facts.problems),
            5,
            "Close every tag in order (validate the html)",
        )
    ]


def active_content(d: Draft) -> list[Issue]:
    """Script, form, iframe, object, embed: blocked by clients, suspicious to filters."""
    if not d.html:
        return []
    out = []
    for tag in ("script", "form", "iframe", "object", "embed", "applet"):
        count = d.html_facts.active.get(tag, 0)
        if count:
            severity, penalty, advice = ACTIVE_SEVERITY[tag]
            out.append(
                Issue(
                    "html",
                    tag if tag in ("script", "form") else "embedded_content",
                    severity,
                    f"The html contains {count} <{tag}> element(s)",
                    penalty,
                    advice,
                )
            )
    return out


# ----------------------------------------------------------------------- attachments

# Gmail refuses these outright ("blocked for security reasons"); most filters agree.
RISKY_EXTENSIONS = frozenset(
    [
        ".ade",
        ".adp",
        ".apk",
        ".appx",
        ".appxbundle",
        ".bat",
        ".cab",
        ".chm",
        ".cmd",
        ".com",
        ".cpl",
        ".diagcab",
        ".diagcfg",
        ".diagpack",
        ".dll",
        ".dmg",
        ".ex",
        ".ex_",
        ".exe",
        ".hta",
        ".img",
        ".ins",
        ".iso",
        ".isp",
        ".jar",
        ".jnlp",
        ".js",
        ".jse",
        ".lib",
        ".lnk",
        ".mde",
        ".msc",
        ".msi",
        ".msix",
        ".msixbundle",
        ".msp",
        ".mst",
        ".nsh",
        ".pif",
        ".ps1",
        ".scr",
        ".sct",
        ".shb",
        ".sys",
        ".vb",
        ".vbe",
        ".vbs",
        ".vhd",
        ".vxd",
        ".wsc",
        ".wsf",
        ".wsh",
        ".xll",
    ]
)
# Office formats that carry macros: the commonest malware carrier.
MACRO_EXTENSIONS = frozenset(
    [
        ".docm",
        ".dotm",
        ".xlsm",
        ".xltm",
        ".xlam",
        ".xla",
        ".pptm",
        ".potm",
        ".ppam",
        ".ppsm",
        ".sldm",
    ]
)
RISKY_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-ms-installer",
        "application/x-msi",
        "application/x-sh",
        "application/javascript",
        "text/javascript",
        "application/java-archive",
        "application/x-iso9660-image",
        "application/vnd.ms-word.document.macroenabled.12",
        "application/vnd.ms-excel.sheet.macroenabled.12",
        "application/vnd.ms-powerpoint.presentation.macroenabled.12",
    }
)


def _extension(name: str) -> str:
    base = name.strip().lower().rstrip(". ")
    return base[base.rfind(".") :] if "." in base else ""


def risky_attachments(d: Draft) -> list[Issue]:
    """Executable, script, disk-image and macro-enabled Office attachments."""
    out = []
    for a in d.attachments:
        ext = _extension(a.filename)
        name = a.filename or "(no name)"
        if ext in RISKY_EXTENSIONS:
            out.append(
                Issue(
                    "attachments",
                    "risky_attachment",
                    "high",
                    f"{name}: {ext} files are blocked by Gmail and most filters",
                    25,
                    "Do not attach executables, scripts or disk images: link to a download",
                )
            )
        elif ext in MACRO_EXTENSIONS or a.content_type.lower() in RISKY_TYPES:
            what = f"{ext} (macro-enabled Office)" if ext in MACRO_EXTENSIONS else a.content_type
            out.append(
                Issue(
                    "attachments",
                    "risky_attachment",
                    "high",
                    f"{name}: {what} attachments are treated as malware carriers",
                    20,
                    "Send documents without macros (.docx, .xlsx, .pdf)",
                )
            )
    return out


CONTENT_CHECKS: tuple[Check, ...] = (
    missing_text,
    subject,
    spam_phrases,
    image_ratio,
    link_domains,
    url_shorteners,
    unsubscribe,
    gmail_clipping,
    broken_html,
    active_content,
    risky_attachments,
)


def run_checks(d: Draft) -> list[Issue]:
    """Every content check, in a fixed order."""
    out: list[Issue] = []
    for check in CONTENT_CHECKS:
        out.extend(check(d))
    return out

"""Checks of the links: domains that differ from the sender's, bare IP addresses, URL
shorteners."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from mailgate.analysis.draft import Draft
from mailgate.analysis.issues import Issue

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

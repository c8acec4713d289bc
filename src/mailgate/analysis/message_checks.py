"""Checks of the message itself: a text part, the subject, spam phrases, the image ratio,
Gmail's clipping size, and html that is broken or carries active content."""

from __future__ import annotations

import re

from mailgate.analysis.draft import Draft
from mailgate.analysis.issues import Issue

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

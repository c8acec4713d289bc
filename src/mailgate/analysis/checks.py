"""The content checks, in their fixed order: pure functions from a Draft to the issues
they find, one module per subject (message_checks, link_checks, bulk_checks,
attachment_checks; dns_checks look outside the message).

Each check is deterministic (same draft, same issues in the same order) and cheap: the
html is parsed once (Draft.html_facts) and every check reads that. Penalties and
severities are ours; they follow what the large mailbox providers publish (Gmail's
sender guidelines, Gmail's 102 KB clipping and blocked attachment types) and the usual
content-filter rules (SpamAssassin's subject, image-ratio and phrase rules).
"""

from __future__ import annotations

from mailgate.analysis.attachment_checks import risky_attachments
from mailgate.analysis.bulk_checks import unsubscribe
from mailgate.analysis.draft import Draft
from mailgate.analysis.issues import Check, Issue
from mailgate.analysis.link_checks import link_domains, url_shorteners
from mailgate.analysis.message_checks import (
    active_content,
    broken_html,
    gmail_clipping,
    image_ratio,
    missing_text,
    spam_phrases,
    subject,
)

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

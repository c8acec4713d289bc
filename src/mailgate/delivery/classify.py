"""The one place that decides what an upstream reply means: sent, temporary or permanent.

Pure functions, tested against a table of real replies. Unknown situations count as
temporary (as maddy does): a wrong "temporary" costs a retry, a wrong "permanent" loses mail.
"""

from __future__ import annotations

import re

from mailgate.events.categories import categorize, suppresses
from mailgate.models import Outcome, SmtpReply
from mailgate.text import storable

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b\s*")

# A 5xx that says "later" is not a hard failure (rate limits, greylisting, quota bursts).
_TEMPORARY_HINTS = re.compile(
    r"try (again )?later|rate.?limit|too many (connections|messages|requests)|"
    r"temporar|throttl|greylist|graylist|please retry|resources? (un)?available",
    re.IGNORECASE,
)

# Stages of the SMTP conversation where a 5xx is the provider's, not the recipient's.
PROVIDER_STAGES = frozenset({"connect", "ehlo", "starttls", "auth"})


def parse_reply(code: int, text: str) -> SmtpReply:
    """Split 'x.y.z text' into the enhanced code and the rest (as text a store can hold:
    the reply goes into events and DSNs, whatever bytes the server sent)."""
    text = " ".join(storable(text).split())
    m = _ENHANCED.match(text)
    cls = m.group(1) if m else ""
    if m and (cls == str(code)[0] or (cls == "4" and code // 100 == 5)):
        # A 5xx carrying a 4.x.x (550 4.2.2) is kept: the classifier reads it as temporary.
        return SmtpReply(code, f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end() :])
    default = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "")
    return SmtpReply(code, default, text)


def classify(stage: str, reply: SmtpReply) -> Outcome:
    """What this reply, received at this stage, means for the recipient(s) concerned."""
    if 200 <= reply.code < 300 and stage == "data":
        return Outcome.SENT
    if 500 <= reply.code < 600 and stage not in PROVIDER_STAGES:
        return Outcome.PERMANENT if is_permanent(reply) else Outcome.TEMPORARY
    return Outcome.TEMPORARY


def is_permanent(reply: SmtpReply) -> bool:
    """A 5xx that does not say "later": retrying the same recipient cannot help."""
    if not 500 <= reply.code < 600:
        return False
    return not (_TEMPORARY_HINTS.search(reply.text) or reply.enhanced.startswith("4."))


def is_hard_bounce(reply: SmtpReply, category: str | None = None) -> bool:
    """Whether this reply suppresses the address: a permanent failure whose category says
    the address itself is bad (no such user or domain). Policy, content, reputation, quota
    and rate limits bounce the message but keep the address. ``category``: when the
    caller already has it (the attempt computes it once for the event)."""
    if not is_permanent(reply):
        return False
    return suppresses(categorize(reply) if category is None else category)


def connection_reply(kind: str, detail: str) -> SmtpReply:
    """A synthetic reply for failures that produced no SMTP reply (RFC 3463 codes)."""
    codes = {
        "refused": "4.4.1",
        "timeout": "4.4.2",
        "dropped": "4.4.2",
        "tls": "4.7.5",
        "dns": "4.4.3",
        "internal": "4.3.0",
    }
    return SmtpReply(451, codes.get(kind, "4.4.0"), detail)

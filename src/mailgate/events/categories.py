"""Bounce categories: what kind of failure a reply reports, in KumoMTA's names.

A pure function over a rule table kept as data (:data:`RULES`): each row is a category,
a pattern the enhanced status code must match ("" for any) and a pattern searched for in
the reply text ("" for any). The first matching row wins, so the rows run from the most
specific to the most general: provider phrases first (their codes are often generic or
misused: Microsoft answers 5.1.10 for an unknown user, Yahoo 5.7.9 for policy blocks),
then the IANA meaning of the code, then the reply class.

The category is information for the sender and its dashboards; whether a reply is
temporary or permanent stays the decision of :mod:`mailgate.delivery.classify`. Only
:data:`SUPPRESSING` categories suppress an address, and only on a permanent failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mailgate.models import SmtpReply

# KumoMTA's bounce classes (bounce_classify::PreDefinedBounceClass), in its order.
CATEGORIES = (
    "InvalidRecipient",
    "DNSFailure",
    "SpamBlock",
    "SpamContent",
    "ProhibitedAttachment",
    "RelayDenied",
    "AutoReply",
    "TransientFailure",
    "Subscribe",
    "Unsubscribe",
    "ChallengeResponse",
    "BadConfiguration",
    "BadConnection",
    "BadDomain",
    "ContentRelated",
    "InactiveMailbox",
    "InvalidSender",
    "MessageExpired",
    "NoAnswerFromHost",
    "PolicyRelated",
    "ProtocolErrors",
    "QuotaIssues",
    "RelayingIssues",
    "RoutingErrors",
    "SpamRelated",
    "VirusRelated",
    "AuthenticationFailed",
    "TooManyRecipients",
    "Uncategorized",
)

# The address itself is bad: the only categories that suppress it (on a permanent reply).
SUPPRESSING = frozenset({"InvalidRecipient", "BadDomain"})

# A delivery given up after [retry] max_age, whatever its last reply said.
EXPIRED = "MessageExpired"


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    code: str  # regex, full match against the enhanced code ("5.1.1"); "" = any
    text: str  # regex, searched (case-insensitive) in the reply text; "" = any


_SPAM_LISTS = (
    r"spamhaus|spamcop|sorbs\b|barracuda ?(reputation|central)|\brbl\b|dnsbl|"
    r"black ?list|block ?list|blocked using|listed (at|in|on|by)\b|ipcheck\.proofpoint|"
    r"banned sending ip|traffic not accepted from this ip|block(ed)? for spam|"
    r"\[tss?\d\d\]|user complaints|unusual rate of unsolicited|"
    r"(ip|sender|domain|poor|low|bad) reputation|reputation (of|for|block)"
)

# fmt: off
RULES: tuple[Rule, ...] = (
    # -- provider phrases, most specific first ------------------------------------------
    Rule("InvalidSender", "", r"sender verify failed|sender address rejected: (?!access denied)"
         r"|sender (address|domain) (is )?(invalid|unknown|not found)|invalid sender"),
    Rule("RelayDenied", "", r"relay(ing)? (access )?(denied|not permitted|not allowed|prohibited)"
         r"|open relay not allowed|unable to relay|not allowed to relay|we do not relay"),
    Rule("SpamBlock", "", _SPAM_LISTS),
    Rule("VirusRelated", "", r"virus|malware|infected|trojan|phishing"),
    Rule("ProhibitedAttachment", "", r"(attachment|file ?type|file extension|executable)s?"
         r".{0,40}(not allowed|prohibited|blocked|banned|forbidden|rejected)"
         r"|(prohibited|banned|forbidden|blocked) (attachment|file ?type|file extension)"),
    Rule("AuthenticationFailed", "", r"\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated"
         r"|authentication (information|required|checks?|failed)|fails? to pass authentication"
         r"|\bptr\b|reverse (dns|lookup|hostname)|cannot find your (reverse )?hostname"
         r"|bad dns ptr"),
    Rule("SpamContent", "", r"\bspam\b|unsolicited|junk mail|bulk mail"),
    Rule("QuotaIssues", "", r"quota|mailbox (is )?full|storage (full|allocation)"
         r"|insufficient (system )?storage|out of storage|mail ?box size limit"
         r"|size exceeds|too (big|large)|exceeds? (the )?(maximum|fixed|size)"),
    Rule("InactiveMailbox", "", r"(account|mailbox|user|address)( \S+){0,6} (has been |is )"
         r"(disabled|deactivated|suspended|inactive|closed|expired|locked)"
         r"|no longer (active|available|in use)|inactive (user|account|mailbox)"),
    Rule("InvalidRecipient", "", r"no such (user|recipient|mailbox|address|person|account)"
         r"|(user|recipient|mailbox|address|account) (unknown|not found|invalid)"
         r"|unknown (user|recipient|mailbox|address|local.?part)|recipientnotfound"
         r"|(user|recipient|mailbox|address|account|e-?mail)( \S+){0,6} (does not|doesn't|do not"
         r"|did not) exist|doesn't have a \S+ account|invalid (recipient|mailbox|address|user)"
         r"|not a valid (user|recipient|mailbox)|mailbox not found"
         r"|access denied\. as\(201806281\)"),
    Rule("BadDomain", "", r"domain (name )?(not found|does not exist|doesn't exist|invalid)"
         r"|host (or domain name )?not found|nxdomain|does not accept mail|null mx"
         r"|has no mail server|no (mx|mail exchanger) (record )?for"),
    Rule("TooManyRecipients", "", r"too many recipients"),
    Rule("TransientFailure", "", r"try (again )?later|rate.?limit|too many (connections|messages"
         r"|requests)|temporar|throttl|greylist|graylist|server busy|receiving mail (at a rate"
         r"|too quickly)|please retry|resources? (temporarily )?unavailable|deferred"),
    Rule("PolicyRelated", "", r"polic(y|ies)|prohibit|not authori[sz]ed|access denied"
         r"|administrative|blocked senders|envelope blocked|rejected by header|anti-?spoofing"),
    Rule("ContentRelated", "", r"content|security issue"),
    Rule("BadConnection", "", r"\btls\b|starttls|certificate|handshake"),
    # -- the enhanced code, IANA's meaning ----------------------------------------------
    Rule("InvalidRecipient", r"[45]\.1\.[1345]", ""),
    Rule("BadDomain", r"[45]\.1\.(2|10)|5\.7\.18", ""),
    Rule("InvalidRecipient", r"5\.7\.17", ""),
    Rule("InactiveMailbox", r"[45]\.1\.6|[45]\.2\.1|5\.7\.13", ""),
    Rule("InvalidSender", r"[45]\.1\.[78]|[45]\.7\.27", ""),
    Rule("QuotaIssues", r"[45]\.2\.[23]|[45]\.3\.[14]", ""),
    Rule("NoAnswerFromHost", r"[45]\.4\.1", ""),
    Rule("BadConnection", r"[45]\.4\.2", ""),
    Rule("DNSFailure", r"[45]\.4\.3", ""),
    Rule("RoutingErrors", r"[45]\.4\.[46]|[45]\.1\.0", ""),
    Rule("MessageExpired", r"[45]\.4\.7", ""),
    Rule("TooManyRecipients", r"[45]\.5\.3", ""),
    Rule("ProtocolErrors", r"[45]\.[56]\.\d+", ""),
    Rule("RelayDenied", r"[45]\.7\.1", r"relay"),
    Rule("AuthenticationFailed", r"5\.7\.([2-9]|1[0124-6]|19|2[0-69]|30)", ""),
    Rule("BadConnection", r"4\.7\.5", ""),
    Rule("SpamBlock", r"[45]\.7\.28", ""),
    Rule("PolicyRelated", r"[45]\.7\.\d+", ""),
    Rule("TransientFailure", r"4\.[0-9]\.\d+", ""),
    # -- what is left: only its class --------------------------------------------------
    Rule("Uncategorized", "", ""),
)
# fmt: on


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[str, re.Pattern[str] | None, re.Pattern[str] | None], ...]:
    return tuple(
        (
            rule.category,
            re.compile(rule.code, re.ASCII) if rule.code else None,
            re.compile(rule.text, re.IGNORECASE) if rule.text else None,
        )
        for rule in RULES
    )


def categorize(reply: SmtpReply) -> str:
    """The category of a failure reply ("" for a success: there is nothing to classify)."""
    if 200 <= reply.code < 400:
        return ""
    text = reply.text
    for category, code, pattern in _compiled():
        if code is not None and not code.fullmatch(reply.enhanced):
            continue
        if pattern is not None and not pattern.search(text):
            continue
        return category
    return "Uncategorized"


def suppresses(category: str) -> bool:
    """Whether a permanent failure of this category means the address itself is bad."""
    return category in SUPPRESSING

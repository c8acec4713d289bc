"""The upstream's id for a message, read from its 250 reply to the end of DATA.

A pure function over the reply text, tested against a table of real replies. Recorded per
delivery (deliveries.provider_message_id) so an operator can find the message in the
provider's own logs. Forms recognised, the first that yields an id wins:

- ``queued as X`` / ``saved as X`` (Postfix, SendGrid, Brevo; mailgate's maildir names the
  file it wrote);
- ``id=X`` (Exim);
- ``<local@host>`` (Microsoft 365 / Exchange: the Message-ID it queued the message under,
  which its message trace searches by; the ``[InternalId=...]`` is per server, not taken);
- ``... X gsmtp`` (Gmail: the token before ``gsmtp``, after the timestamp);
- ``Ok X`` / ``Ok: X`` (Amazon SES and other hosted providers);
- a reply that is a single id (``250 2.0.0 8f3a1c2e-...``).

Only a token that looks like an id counts: printable, no spaces, at most 200 characters,
with at least one digit (so ``OK queued upstream`` or ``Great success`` give no id). No id
is "" rather than a guess.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 200

_CODES = re.compile(r"^\s*(?:\d{3}[ -])?\s*(?:[245]\.\d{1,3}\.\d{1,3}\b)?\s*")
_TOKEN = r"[!-~]+"  # printable ASCII, no space
_QUEUED_AS = re.compile(rf"\b(?:queued|saved)\s+as\s+<?({_TOKEN}?)>?(?=[\s;,)]|$)", re.I)
_EXIM = re.compile(rf"(?:^|\s)id=<?({_TOKEN}?)>?(?=[\s;,]|$)", re.I)
_ANGLE = re.compile(r"<([!-;=?-~]+@[!-;=?-~]+)>")  # <local@host>, no <> or space inside
_GSMTP = re.compile(rf"({_TOKEN})(?:\s+-)?\s+gsmtp\s*$", re.I)
_OK = re.compile(rf"^(?:ok|accepted|queued)\b[:\s]\s*<?({_TOKEN}?)>?(?:\s|$)", re.I)
_BARE = re.compile(rf"^<?({_TOKEN}?)>?$")


def _looks_like_id(token: str) -> bool:
    return 0 < len(token) <= MAX_ID_LENGTH and any(c.isdigit() for c in token)


def upstream_message_id(reply_text: str) -> str:
    """The message id in an upstream's reply to DATA (with or without its codes), or ""."""
    text = " ".join(reply_text.split())
    text = _CODES.sub("", text, count=1)
    for pattern in (_QUEUED_AS, _EXIM, _ANGLE, _GSMTP, _OK, _BARE):
        m = pattern.search(text)
        if m is not None and _looks_like_id(token := m.group(1).rstrip(".,;:")):
            return token
    return ""

"""RFC 5322's dot-atom, as a regular expression: what the fast paths that take a plain
address without a parser recognise (address_check.py for the API, the SMTP session's
MAIL and RCPT, the outbound envelope in transports/smtp_wire.py). Anything else goes to
the full parser of each."""

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 3.2.3 atext, one or more
DOT_ATOM = rf"{ATEXT}(?:\.{ATEXT})*"


def ace(domain: str) -> str:
    """A domain in its ASCII form (IDNA A-labels, "exämple.org" -> "xn--exmple-cua.org"),
    the one form sending domains are configured, compared and DKIM-signed in: SMTP hands
    over what the client wrote, the API what its address parser made. Unchanged if it is
    ASCII already or not encodable (the caller's own checks refuse it)."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain

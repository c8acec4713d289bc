"""RFC 5322's dot-atom, as a regular expression: what the fast paths that take a plain
address without a parser recognise (address_check.py for the API, the SMTP session's
MAIL and RCPT, the outbound envelope in transports/smtp_wire.py). Anything else goes to
the full parser of each."""

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 3.2.3 atext, one or more
DOT_ATOM = rf"{ATEXT}(?:\.{ATEXT})*"

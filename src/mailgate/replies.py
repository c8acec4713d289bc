"""Every SMTP reply mailgate gives on purpose, in one place (README lists them)."""

from __future__ import annotations

import re

from mailgate.models import SmtpReply

MAIL_OK = SmtpReply(250, "2.1.0", "Sender OK")
RCPT_OK = SmtpReply(250, "2.1.5", "Recipient OK")
AUTH_REQUIRED = SmtpReply(530, "5.7.0", "Authentication required")
AUTH_INVALID = SmtpReply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TOO_MANY = SmtpReply(421, "4.7.0", "Too many failed authentication attempts, closing")
SENDER_DOMAIN_REFUSED = SmtpReply(
    553, "5.7.1", "Sender address rejected: not allowed to send as this domain"
)
SENDER_SYNTAX = SmtpReply(553, "5.1.7", "Sender address rejected: bad address syntax")
NULL_SENDER_REFUSED = SmtpReply(
    553, "5.7.1", "Sender address rejected: the null sender <> is not accepted for submission"
)
RCPT_SYNTAX = SmtpReply(553, "5.1.3", "Recipient address rejected: bad address syntax")
# RFC 6531 3.4: a non-ASCII address only in a transaction whose MAIL has SMTPUTF8.
NEEDS_SMTPUTF8 = SmtpReply(
    553, "5.6.7", "Address rejected: a non-ASCII address needs MAIL's SMTPUTF8 parameter"
)
TOO_MANY_RECIPIENTS = SmtpReply(452, "4.5.3", "Too many recipients")
RCPT_SUPPRESSED = SmtpReply(550, "5.7.1", "Recipient address rejected: recipient is suppressed")
TRACKING_UNAVAILABLE = SmtpReply(
    550, "5.7.1", "Tracking needs [http] public_url in the relay's configuration"
)
NO_RECIPIENTS = SmtpReply(554, "5.5.1", "No valid recipients")
MESSAGE_TOO_BIG = SmtpReply(552, "5.3.4", "Message size exceeds fixed maximum message size")
LINE_TOO_LONG = SmtpReply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6: at most 998 octets)")
TOO_MANY_HOPS = SmtpReply(554, "5.4.6", "Too many hops (Received headers): mail loop?")
# A key's quota (accepted recipients per day or month) is used up: temporary, since the
# next period takes the message (the client's queue keeps it meanwhile).
QUOTA_EXCEEDED = SmtpReply(
    452, "4.7.1", "Sending quota of this key exceeded, try again next period"
)
# Over [server] max_inflight_bytes (mailgate.inflight): memory, not the message, is short.
INFLIGHT_FULL = SmtpReply(452, "4.3.1", "Insufficient system resources, try again later")
# Free space on the queue's file system is below [server] min_free_space (or the database
# said it is full): temporary, the queue drains and accepting resumes by itself.
INSUFFICIENT_STORAGE = SmtpReply(452, "4.3.1", "Insufficient system storage")
STORE_FAILED = SmtpReply(451, "4.3.0", "Queue temporarily unavailable, try again later")
INTERNAL_ERROR = SmtpReply(451, "4.3.0", "Internal error, try again later")
SHUTTING_DOWN = SmtpReply(421, "4.3.2", "Service shutting down, try again later")
IDLE_TIMEOUT = SmtpReply(421, "4.4.2", "Idle timeout, closing connection")
TOO_MANY_CONNECTIONS = SmtpReply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = SmtpReply(
    421, "4.7.0", "Too many connections from your address, try again later"
)


def queued(queue_id: str) -> SmtpReply:
    return SmtpReply(250, "2.0.0", f"Ok: queued as {queue_id}")


# aiosmtpd's own protocol replies ("503 Error: need MAIL command", "250 OK" to NOOP) carry
# no enhanced status code, but RFC 2034 wants one on every reply once ENHANCEDSTATUSCODES
# is advertised (except the greeting, the EHLO/HELO answer and the 3xx prompts): these
# are the codes Postfix gives the same situations, and the class's X.0.0 otherwise.
_HAS_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_ENHANCED_BY_CODE = {
    454: "4.7.0",  # TLS not available
    500: "5.5.2",  # syntax error, command unrecognised, line too long
    501: "5.5.4",  # syntax error in parameters
    502: "5.5.1",  # command not implemented
    503: "5.5.1",  # bad sequence of commands
    504: "5.5.4",  # parameter not implemented
    530: "5.7.0",  # STARTTLS first
    552: "5.3.4",
    553: "5.1.3",
    555: "5.5.4",  # MAIL/RCPT parameters not recognised
}


def with_enhanced_code(line: str) -> str:
    """``line`` with an enhanced status code after its reply code, if it has none."""
    if len(line) < 4 or not line[:3].isdigit() or line[3] not in " -" or line[0] == "3":
        return line
    if _HAS_ENHANCED.match(line):
        return line
    code = int(line[:3])
    enhanced = _ENHANCED_BY_CODE.get(code, f"{line[0]}.0.0")
    return f"{line[:4]}{enhanced} {line[4:]}" if line[4:] else f"{line[:4]}{enhanced}"

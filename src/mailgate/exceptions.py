"""The one error tree.

Every error carries the text that is safe to show a client (``public_message``) apart
from the internal reason, so that no ingress ever has to turn an exception's ``str()``
into a reply.
"""

from __future__ import annotations

import os
import socket

from mailgate.models import SmtpReply


class MailgateError(Exception):
    """Base of all mailgate errors."""

    public_message: str = "internal error"

    def __init__(self, reason: str = "", *, public_message: str | None = None) -> None:
        super().__init__(reason or self.public_message)
        if public_message is not None:
            self.public_message = public_message


class ConfigError(MailgateError):
    """relay.toml (or an override) is invalid; the message names the file and the key."""


class ListenError(MailgateError):
    """A listening address cannot be bound (in use, not permitted, no such address)."""

    @classmethod
    def of(cls, what: str, address: str, exc: OSError) -> ListenError:
        if isinstance(exc, socket.gaierror):
            # getaddrinfo's codes are no errno: strerror(-2) is "Unknown error -2".
            reason = f"cannot resolve its host ({exc.strerror})"
        else:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(f"cannot listen for {what} on {address}: {reason}")


class PolicyRefused(MailgateError):
    """The client asked for something policy forbids; carries the exact SMTP and HTTP answer."""

    def __init__(
        self,
        reply: SmtpReply,
        *,
        http_status: int = 422,
        error_code: str = "rejected",
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(reply.text, public_message=reply.text)
        self.retry_after = retry_after  # seconds until retrying can succeed, if known
        self.reply = reply
        self.http_status = http_status
        self.error_code = error_code
        self.field = field


class DuplicateEntry(MailgateError):
    """A unique key (idempotency key, name) is already taken."""


class TemporaryFailure(MailgateError):
    """Something failed that may work later (the client or the queue should retry)."""


class StoreUnavailable(TemporaryFailure):
    """The queue could not commit; the client keeps the message and retries."""

    public_message = "queue temporarily unavailable, try again later"


class InsufficientStorage(StoreUnavailable):
    """The queue's file system is below the free-space reserve, or the database reported
    it full: new mail is refused (SMTP 452 4.3.1, HTTP 507) until delivery and retention
    free space. A StoreUnavailable, so any path that does not know it still answers
    "retry later"."""

    public_message = "insufficient storage, try again later"
    http_status = 507
    error_code = "insufficient_storage"

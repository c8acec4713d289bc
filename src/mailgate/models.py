"""Value objects shared by the ingresses, the store and the delivery loop.

Values (SmtpReply, Credential, ...) are frozen dataclasses. The records made for every
message or attempt (Submission, NewMessage, Accepted, ClaimedDelivery, AttemptResult,
DeliveryUpdate, and elsewhere Prepared, MessageSpec, HeaderInfo, Work) are plain slotted
ones, marked "a record": a frozen dataclass sets each field through object.__setattr__,
three times the cost of its __init__, and these came to about 7% of the instructions of
an API send. Nothing changes a record once it is made; make a new one (dataclasses.replace).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailgate.pickling import by_fields

if TYPE_CHECKING:
    from mailgate.headers import HeaderInfo


@by_fields
@dataclass(frozen=True, slots=True)
class SmtpReply:
    """An SMTP reply: basic code, enhanced status code (RFC 3463) and text."""

    code: int
    enhanced: str
    text: str

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def line(self) -> str:
        """The reply as sent on the wire (without CRLF)."""
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"

    def __str__(self) -> str:
        return self.line()


class DeliveryStatus(enum.StrEnum):
    """Per-recipient delivery status (see DESIGN.md, "Statuses")."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DEFERRED = "deferred"
    HELD = "held"  # put on hold by an operator (mailgate queue hold); release to go on
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.FAILED,
        DeliveryStatus.CANCELLED,
    }
)


class Outcome(enum.StrEnum):
    """What one delivery attempt means for the recipient (the classifier's answer)."""

    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Credential:
    """Who submitted a message: an API key, or a trusted network."""

    kind: str  # "key" or "network"
    id: str  # key id, or the client address
    name: str
    domains: tuple[str, ...] | None = None  # sender domains allowed; None = all configured
    scope: str = "send"
    rate: str = ""  # HTTP request rate of this key ("" = the [http] default)
    default_from: str = ""  # the sender of API requests that name none ("" = [compat])
    quota: str = ""  # accepted recipients per calendar period, e.g. "10000/month"


@dataclass(slots=True)  # a record: not frozen, see models.py
class Submission:
    """A message handed to accept() by an ingress, before policy and commit."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes  # RFC 5322 bytes with CRLF line endings
    source: str  # "smtp" or "http"
    credential: Credential
    client_address: str = ""
    client_helo: str = ""
    protocol: str = "ESMTP"  # for the Received header: ESMTP, ESMTPS, ESMTPA, ESMTPSA, HTTP
    # HTTP API extras, kept with the message and shown when it is read back.
    display_to: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    scheduled_at: float | None = None
    job_id: str | None = None  # the batch (job) it belongs to
    # Bulk mail (a batch's): List-Unsubscribe by default (events/rewrite.Options). Not a
    # single send that is a job of one for its API (MailSage's).
    bulk: bool = False
    provider: str = ""  # the one provider it may go to ("" = the routes decide)
    attempt_once: bool = False  # the first attempt decides: no retries, no DSN
    # What headers.scan would find in ``data``, when the API built it and knows.
    header_info: HeaderInfo | None = None


@dataclass(slots=True)  # a record: not frozen, see models.py
class Accepted:
    """The answer of accept(): the queue id, after the durable commit."""

    id: str
    recipients: tuple[str, ...]
    message_id: str = ""
    created_at: float = 0.0
    scheduled: bool = False
    suppressed: tuple[str, ...] = ()  # recipients left out: on the suppression list


@by_fields
@dataclass(slots=True)  # a record: not frozen, see models.py
class ClaimedDelivery:
    """One recipient's delivery, leased to this node for one attempt."""

    message_id: str
    rcpt_idx: int
    recipient: str
    attempts: int
    status: str
    retried_at: float | None = None  # the last Store.requeue: max_age counts from it


@by_fields
@dataclass(slots=True)
class QueuedMessage:
    """A message as the delivery loop needs it."""

    id: str
    sender: str
    raw: bytes
    created_at: float
    deliveries: list[ClaimedDelivery] = field(default_factory=list)
    dkim: bytes | None = None  # DKIM-Signature header(s), once signed
    job_id: str | None = None
    provider: str = ""  # pinned provider ("" = the routes decide)
    attempt_once: bool = False
    # Resolved tracking options (events.rewrite.Options.stored()); None: sent as stored.
    tracking: dict[str, bool] | None = None
    size: int = 0  # of the stored body; raw is b"" when it was too big to claim with it

    @property
    def body_in_store(self) -> bool:
        """The body is read from the store where it is sent (store/bodies.py)."""
        return not self.raw and self.size > 0


SKIPPED = "skipped"  # AttemptResult.stage of a provider that was not tried after all


@by_fields
@dataclass(slots=True)  # a record: not frozen, see models.py
class AttemptResult:
    """The classified result of one attempt for one recipient."""

    outcome: Outcome
    reply: SmtpReply
    provider: str
    # Where it happened: connect, ehlo, starttls, auth, mail, rcpt, data, dns, local.
    # A 5xx at rcpt is the recipient's; elsewhere it may be the provider's (failover).
    stage: str = "data"


# Rows the delivery process hands back to the store; here, not in mailgate.store, so that
# the delivery process need not import SQLAlchemy.


@dataclass(slots=True)  # a record: not frozen, see models.py
class NewMessage:
    """A message and its recipients, ready to commit."""

    id: str
    created_at: float
    sender: str
    recipients: Sequence[str]
    raw: bytes  # as submitted; stored after ``head``
    subject: str = ""
    message_id_header: str = ""
    source: str = "smtp"
    credential: str = ""
    client_address: str = ""
    key_id: str = ""
    display_to: Sequence[str] = ()
    tags: Sequence[str] = ()
    metadata: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    scheduled_at: float | None = None  # hold until then (status "scheduled")
    job_id: str | None = None
    provider: str = ""
    attempt_once: bool = False
    # The trace headers accept() adds. Kept apart from ``raw`` so that a big message's
    # body is not copied to put them in front of it (the store writes both, in order).
    head: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.raw)


@by_fields
@dataclass(slots=True)  # a record: not frozen, see models.py
class DeliveryUpdate:
    """The result of one attempt for one recipient, as the store records it."""

    message_id: str
    rcpt_idx: int
    recipient: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None  # None: final
    provider: str
    response: str
    event: str  # event type: sent, deferred, bounced, failed, ...
    # Providers that failed before this result in the same attempt: (provider, reply).
    failovers: tuple[tuple[str, str], ...] = ()
    provider_message_id: str = ""  # the upstream's id for the message, when it gave one
    category: str = ""  # bounce category (events/categories.py) of a failure, else ""
    # For the dashboard, on the attempt's event: how long the attempt took, and what it
    # was DKIM-signed with ("d=... s=...", "" unsigned; None: not known).
    duration_ms: float | None = None
    dkim: str | None = None


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str
    reason: str
    detail: str
    message_id: str
    created_at: float

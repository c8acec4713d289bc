"""The one accept path (Postfix's "cleanup"): both ingresses hand every message to it.

Policy, limits, the headers the relay adds, and the durable commit. Only after the commit
returns does an ingress answer 250 (SMTP) or 202 (HTTP); if it fails, StoreUnavailable
reaches the ingress, which answers 451 / 503 so the client keeps the message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any

from mailgate import policy, replies
from mailgate.config import Settings
from mailgate.events.metrics import Metrics
from mailgate.events.rewrite import Options
from mailgate.exceptions import InsufficientStorage, PolicyRefused, StoreUnavailable
from mailgate.headers import received_header, rfc5322_date, scan
from mailgate.ids import new_id
from mailgate.models import Accepted, Submission
from mailgate.quota import Quota, fitting, parse_quota
from mailgate.space import FreeSpace
from mailgate.store import IdempotentAnswer, NewJob, NewMessage, QuotaRace, QuotaTake, Store

# Commits tried when other requests keep using the quota between the read and the commit.
_QUOTA_TRIES = 5
# A message's first line is a header field: a name (RFC 5322 ftext) and a colon.
_FIELD_START = re.compile(rb"[!-9;-~]+:")

AnswerFactory = Callable[[list["Accepted | PolicyRefused"]], IdempotentAnswer | None]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The job a batch's accepted messages make (its total is counted at commit)."""

    id: str
    key_id: str
    source: str
    campaign_id: str = ""


class Acceptor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_commit: Callable[[float | None], None] = lambda due: None,
        clock: Callable[[], float] = time.time,
        suppressed: Container[str] = frozenset(),
        unsubscribed: Container[tuple[str, str]] = frozenset(),
        metrics: Metrics | None = None,
        space: FreeSpace | None = None,
    ) -> None:
        self._space = space
        self._store = store
        self._suppressed = suppressed
        self._metrics = metrics
        self._on_commit = on_commit
        self._clock = clock
        self._unsubscribed = unsubscribed
        self._accepted: dict[str, Any] = {}
        self.reconfigure(settings)

    def reconfigure(self, settings: Settings) -> None:
        """A reload: sender domains, limits and tracking defaults for the next accept."""
        self._settings = settings
        self._domains = settings.domain_names()
        self._hostname = settings.server.hostname
        t = settings.tracking
        self._tracking = Options(t.opens, t.clicks, t.unsubscribe)
        self._tracking_off = self._tracking == Options()
        self._links = bool(settings.http.public_url)

    async def accept(self, sub: Submission) -> Accepted:
        """Validate, complete the headers and commit durably; raise PolicyRefused if refused."""
        (result,) = await self.accept_many([sub])
        if isinstance(result, PolicyRefused):
            raise result
        return result

    def short_of_space(self) -> bool:
        """Whether new mail is refused now for want of space ([server] min_free_space);
        nothing is counted (/readyz asks)."""
        return self._space is not None and self._space.low()

    def storage_low(self, source: str) -> bool:
        """Whether new mail is refused for want of space ([server] min_free_space); a
        refusal is counted. SMTP asks at MAIL, before the client sends the data."""
        if not self.short_of_space():
            return False
        if self._metrics is not None:
            self._metrics.storage_refusals.labels(source).inc()
        return True

    def preview(self, sub: Submission) -> NewMessage:
        """The row accept would commit for ``sub``, committing nothing (for analyze);
        raises PolicyRefused exactly as accept would."""
        return self._prepare(sub, self._clock())

    def suppressed(self, recipient: str, sender: str) -> bool:
        """Whether mail from ``sender`` may not go to ``recipient``: the address is on the
        suppression list, or unsubscribed from the sender's domain. SMTP asks at RCPT."""
        if recipient in self._suppressed:
            return True
        if not self._unsubscribed:
            return False
        return (recipient.lower(), sender.rpartition("@")[2].lower()) in self._unsubscribed

    async def accept_many(
        self,
        subs: Sequence[Submission],
        *,
        answer: AnswerFactory | None = None,
        job: JobSpec | None = None,
    ) -> list[Accepted | PolicyRefused]:
        """Check each submission alone; commit all accepted ones in one transaction.

        ``answer`` builds the Idempotency-Key answer from the results; it commits with them.
        ``job``: the job the accepted messages belong to (their Submission.job_id), created
        in the same transaction, with their recipients as its total; none if none is
        accepted (mailgate.jobs.accept_job is the way in).
        """
        if subs and self.storage_low(subs[0].source):
            raise InsufficientStorage("free space below [server] min_free_space")
        now = self._clock()
        results: list[Accepted | PolicyRefused] = []
        rows: list[NewMessage] = []
        for sub in subs:
            try:
                row = self._prepare(sub, now)
            except PolicyRefused as refused:
                results.append(refused)
                continue
            rows.append(row)
            results.append(
                Accepted(
                    id=row.id,
                    recipients=tuple(row.recipients),
                    message_id=row.message_id_header,
                    created_at=now,
                    scheduled=row.scheduled_at is not None,
                    suppressed=_left_out(sub.recipients, row.recipients),
                )
            )
        quota = _quota_of(subs)
        if quota is None:
            await self._commit(rows, results, answer, None, job, now)
            return results
        # Over a key's quota: the batch takes what is left, in order, and the rest is
        # refused per item. The count commits with the messages; when another request or
        # node took some meanwhile, the cut is made again from the count it found.
        cred = subs[0].credential
        period = quota.period(now)
        used = await self._store.keys.quota_usage(cred.id, period)
        for _ in range(_QUOTA_TRIES):
            taken, cut = _cut(rows, results, quota.limit - used, quota.seconds_left(now))
            count = sum(len(r.recipients) for r in taken)
            take = QuotaTake(cred.id, period, quota.limit, count) if count else None
            try:
                await self._commit(taken, cut, answer, take, job, now)
            except QuotaRace as race:
                used = race.used
                continue
            return cut
        raise StoreUnavailable("the key's quota is contended; try again")

    async def _commit(
        self,
        rows: list[NewMessage],
        results: list[Accepted | PolicyRefused],
        answer: AnswerFactory | None,
        quota: QuotaTake | None,
        job: JobSpec | None,
        now: float,
    ) -> None:
        stored_answer = answer(results) if answer is not None else None
        if rows or stored_answer is not None:
            new_job = None
            if job is not None and rows:
                total = sum(len(r.recipients) for r in rows)
                new_job = NewJob(job.id, job.key_id, job.source, job.campaign_id, total, now)
            try:
                await self._store.enqueue(rows, answer=stored_answer, job=new_job, quota=quota)
            except InsufficientStorage:
                if self._space is not None:
                    self._space.note_full()
                if self._metrics is not None and rows:
                    self._metrics.storage_refusals.labels(rows[0].source).inc()
                raise
            if rows:
                if self._space is not None:
                    self._space.consumed(sum(r.size for r in rows))
                # Also for scheduled mail: the scheduler re-times its sleep to the earliest.
                held = [r.scheduled_at for r in rows if r.scheduled_at is not None]
                self._on_commit(min(held) if held else None)
                if self._metrics is not None:
                    self._accepted_counter(rows[0].source).inc(len(rows))

    def _accepted_counter(self, source: str) -> Any:
        """The accepted-messages counter of ``source``, looked up once (labels() takes a
        lock and builds a key at every call)."""
        counter = self._accepted.get(source)
        if counter is None:
            assert self._metrics is not None
            counter = self._accepted[source] = self._metrics.accepted.labels(source)
        return counter

    def _prepare(self, sub: Submission, now: float) -> NewMessage:
        limits = self._settings.smtp
        refusal = policy.check_sender(sub.sender, sub.credential, self._domains)
        if refusal is not None:
            raise PolicyRefused(refusal, error_code="domain_not_verified", field="from")
        if not sub.recipients:
            raise PolicyRefused(replies.NO_RECIPIENTS, error_code="invalid_to_address", field="to")
        if len(sub.recipients) > limits.max_recipients:
            raise PolicyRefused(
                replies.TOO_MANY_RECIPIENTS, error_code="too_many_recipients", field="to"
            )
        for rcpt in sub.recipients:
            refusal = policy.check_recipient(rcpt)
            if refusal is not None:
                raise PolicyRefused(refusal, error_code="invalid_to_address", field="to")
        # Each address once (To, Cc and Bcc may repeat one; so may SMTP's RCPTs): Postfix
        # queues one delivery per address, case aside, and so does mailgate.
        recipients = tuple(
            r for r in _each_once(sub.recipients) if not self.suppressed(r, sub.sender)
        )
        if not recipients:
            raise PolicyRefused(
                replies.RCPT_SUPPRESSED, error_code="recipient_suppressed", field="to"
            )
        if len(sub.data) > limits.max_message_size:
            raise PolicyRefused(
                replies.MESSAGE_TOO_BIG, http_status=413, error_code="message_too_large"
            )
        info = sub.header_info if sub.header_info is not None else scan(sub.data)
        if info.received > limits.max_received_headers:
            raise PolicyRefused(replies.TOO_MANY_HOPS, error_code="too_many_hops")

        queue_id = new_id()
        added = [
            received_header(
                helo=sub.client_helo,
                address=sub.client_address,
                hostname=self._hostname,
                protocol=sub.protocol,
                queue_id=queue_id,
                ts=now,
            )
        ]
        message_id = info.message_id
        if not info.has_message_id:
            message_id = f"<{queue_id}@{self._hostname}>"
            added.append(f"Message-ID: {message_id}\r\n".encode("ascii", "replace"))
        if not info.has_date:
            added.append(f"Date: {rfc5322_date(now)}\r\n".encode("ascii"))
        if not sub.data.startswith(b"\r\n") and not _FIELD_START.match(sub.data):
            # No header first (a body alone, or a line starting with a space): what the
            # client sent is the body, after a blank line, as Postfix makes it. Put right
            # after ours, its lines would be read as headers, or continue our last one.
            added.append(b"\r\n")
        scheduled_at = sub.scheduled_at if sub.scheduled_at and sub.scheduled_at > now else None
        tracking = self._tracking_of(sub)
        return NewMessage(
            id=queue_id,
            created_at=now,
            sender=sub.sender,
            recipients=recipients,
            raw=sub.data,
            head=b"".join(added),
            subject=info.subject,
            message_id_header=message_id,
            source=sub.source,
            credential=f"{sub.credential.kind}:{sub.credential.name}",
            client_address=sub.client_address,
            key_id=sub.credential.id if sub.credential.kind == "key" else "",
            display_to=sub.display_to,
            tags=sub.tags,
            metadata=sub.metadata,
            tracking=tracking,
            scheduled_at=scheduled_at,
            job_id=sub.job_id,
            provider=sub.provider,
            attempt_once=sub.attempt_once,
        )

    def _tracking_of(self, sub: Submission) -> dict[str, bool] | None:
        """The message's resolved tracking options (see Options.resolve); refused when it
        asks for tracking and the relay has no [http] public_url for the links."""
        if sub.tracking is None and not sub.bulk and self._tracking_off:
            return None  # the common case, SMTP or API mail with tracking off: no work
        options = Options.resolve(sub.tracking, self._tracking, bulk=sub.bulk)
        if not self._links:
            if options.opens or options.clicks:
                raise PolicyRefused(
                    replies.TRACKING_UNAVAILABLE, error_code="invalid_tracking", field="tracking"
                )
            return None  # no public URL: no List-Unsubscribe either
        return options.stored()


def _quota_of(subs: Sequence[Submission]) -> Quota | None:
    """The quota of the submissions' key (one call's submissions share their credential)."""
    if not subs or not subs[0].credential.quota or subs[0].credential.kind != "key":
        return None
    return parse_quota(subs[0].credential.quota)


def _cut(
    rows: list[NewMessage],
    results: list[Accepted | PolicyRefused],
    left: int,
    retry_after: int,
) -> tuple[list[NewMessage], list[Accepted | PolicyRefused]]:
    """The rows that fit in ``left`` recipients, and the results with the rest refused."""
    n = fitting([len(r.recipients) for r in rows], max(left, 0))
    if n == len(rows):
        return rows, results
    over = {r.id for r in rows[n:]}
    cut: list[Accepted | PolicyRefused] = []
    for result in results:
        if isinstance(result, Accepted) and result.id in over:
            result = PolicyRefused(
                replies.QUOTA_EXCEEDED,
                http_status=429,
                error_code="quota_exceeded",
                retry_after=retry_after,
            )
        cut.append(result)
    return rows[:n], cut


def _each_once(recipients: Sequence[str]) -> list[str]:
    """The first of each address, case aside, in the order given."""
    if len(recipients) == 1:
        return list(recipients)
    seen: set[str] = set()
    out = []
    for r in recipients:
        key = r.lower()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _left_out(given: Sequence[str], kept: Sequence[str]) -> tuple[str, ...]:
    """The recipients given but not queued (suppressed), each once: not the repeats of a
    queued address."""
    queued = {r.lower() for r in kept}
    return tuple({r.lower(): r for r in given if r.lower() not in queued}.values())

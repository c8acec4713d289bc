"""Running a batch as a job: every ingress's batch (native, MailSage, MailStack,
MessagePipe) goes through accept_job, so each is one job committed with its messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from mailgate.accept import Acceptor, JobSpec
from mailgate.exceptions import PolicyRefused
from mailgate.ids import new_id
from mailgate.models import Accepted, Submission
from mailgate.store import IdempotentAnswer

# Builds the Idempotency-Key answer from the job id (None: nothing accepted) and results.
JobAnswerFactory = Callable[[str | None, list[Accepted | PolicyRefused]], IdempotentAnswer | None]


async def accept_job(
    acceptor: Acceptor,
    subs: Sequence[Submission],
    *,
    key_id: str,
    source: str,
    campaign_id: str = "",
    answer: JobAnswerFactory | None = None,
    bulk: bool = True,
) -> tuple[str | None, list[Accepted | PolicyRefused]]:
    """Accept ``subs`` as one new job (one transaction: the job, its messages and the
    answer); returns the job's id, or None when nothing was accepted (no job is made),
    and each submission's result in order. ``bulk``: a batch's mail (List-Unsubscribe by
    default); False for a single send that an API makes a job of one."""
    job_id = new_id()
    spec = JobSpec(id=job_id, key_id=key_id, source=source, campaign_id=campaign_id)
    subs = [dataclasses.replace(s, job_id=job_id, bulk=bulk) for s in subs]

    def job_answer(results: list[Accepted | PolicyRefused]) -> IdempotentAnswer | None:
        assert answer is not None
        return answer(_made(job_id, results), results)

    results = await acceptor.accept_many(
        subs, answer=job_answer if answer is not None else None, job=spec
    )
    return _made(job_id, results), results


def _made(job_id: str, results: list[Accepted | PolicyRefused]) -> str | None:
    return job_id if any(isinstance(r, Accepted) for r in results) else None

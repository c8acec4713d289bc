"""The one accept path (Postfix's "cleanup"): both ingresses hand every message to it.

Policy, limits, the headers the relay adds, and the durable commit. Only after the commit
returns does an ingress answer 250 (SMTP) or 202 (HTTP); if it fails, StoreUnavailable
reaches the ingress, which answers 451 / 503 so the client keeps the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailgate import policy, replies
from mailgate.config import Settings
from mailgate.exceptions import PolicyRefused
from mailgate.headers import received_header, rfc5322_date, scan
from mailgate.ids import new_id
from mailgate.models import Accepted, Submission
from mailgate.store import NewMessage, Store


class Acceptor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._on_commit = on_commit
        self._clock = clock
        self._domains = settings.domain_names()
        self._hostname = settings.server.hostname

    async def accept(self, sub: Submission) -> Accepted:
        """Validate, complete the headers and commit durably; raise PolicyRefused if refused."""
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
        if len(sub.data) > limits.max_message_size:
            raise PolicyRefused(
                replies.MESSAGE_TOO_BIG, http_status=413, error_code="message_too_large"
            )
        info = scan(sub.data)
        if info.received > limits.max_received_headers:
            raise PolicyRefused(replies.TOO_MANY_HOPS, error_code="too_many_hops")

        now = self._clock()
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
        raw = b"".join(added) + sub.data

        await self._store.enqueue(
            [
                NewMessage(
                    id=queue_id,
                    created_at=now,
                    sender=sub.sender,
                    recipients=sub.recipients,
                    raw=raw,
                    subject=info.subject,
                    message_id_header=message_id,
                    source=sub.source,
                    credential=f"{sub.credential.kind}:{sub.credential.name}",
                    client_address=sub.client_address,
                )
            ]
        )
        self._on_commit()
        return Accepted(id=queue_id, recipients=sub.recipients)

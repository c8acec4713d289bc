"""The delivery process: a child of ``mailgate serve`` that makes the delivery attempts.

Why a process of its own: an attempt is CPU on an event loop (the SMTP conversation with a
provider or MX, DNS, the result lines in the log), and in the relay's process it ran on
the same loop and GIL as the SMTP and HTTP listeners, so accepts waited behind deliveries
and the relay used one core however many it had. Here attempts run beside the listeners,
on a core of their own where there is one, at a lower priority
(:data:`mailgate.worker_child.NICE`): when both want the same core, accepts go first.

The scheduler stays in the relay's process with the store (one writer, so SQLite needs no
locking between processes): it claims a message, sends it here
(:class:`~mailgate.models.QueuedMessage`), and records the
:class:`~mailgate.delivery.outcome.AttemptRecord` that comes back. The router's state
(circuit breakers, rate buckets, connection pools, the DNS cache) lives here, in one
process, so provider limits hold as configured. DKIM signing processes are this process's
own children. If this process dies, the attempts in flight are deferred (whether they went
out is unknown, so they are tried again after the backoff) and another one starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from mailgate import collector
from mailgate.config import Settings
from mailgate.delivery.outcome import AttemptRecord
from mailgate.models import QueuedMessage
from mailgate.worker_child import answer_each, run_child
from mailgate.workers import WorkerPool

log = logging.getLogger(__name__)

# DKIM signing processes: one per core beyond two (the relay's process with the queue
# writer takes one core, this process the other), at most 4. Each signs ~2,000 messages/s
# with RSA-2048. With fewer cores signatures are made in threads of this process: on
# 2 cores a signing process of its own made accepts slower while the relay delivered with
# DKIM (paced 500/s, 3 rounds: accept p99 11.8-35.4 ms against 6.9-7.5 ms; held 3-5 ms).
SIGNING_PROCESSES = max(0, min(4, (os.cpu_count() or 1) - 2))
STOP_MARGIN = 30.0  # s beyond the shutdown grace for the attempts in flight to end
# The request for the router's provider health (admin API) instead of a message to attempt.
PROVIDER_STATUS = "provider-status"


class DeliveryProcess(WorkerPool):
    """The relay's side: one child, started again if it dies."""

    def __init__(self, settings: Settings) -> None:
        # The tracking key comes from the store (one for the relay), not from relay.toml:
        # set_tracking_key() gives it once the store is open.
        self._settings = settings
        self._tracking_key = b""
        super().__init__(
            __name__,
            (settings, self._tracking_key),
            1,
            what="delivery process",
            stop_timeout=settings.delivery.shutdown_grace + STOP_MARGIN,
            gather=True,  # a claim's messages in one write
        )

    def set_tracking_key(self, tracking_key: bytes) -> None:
        """The key read from the store once it is open, for the hello start() sends (the
        process may be running already: prestart())."""
        self._tracking_key = tracking_key
        self.set_hello((self._settings, tracking_key))

    async def reconfigure(self, settings: Settings) -> None:
        """A reload: a new child with the new providers, routes, DKIM keys, [retry] and
        [dns] takes every attempt from now on; the old one finishes the attempts it has,
        then stops (workers.WorkerPool.replace). Its circuit breakers, rate buckets and
        connection pools start afresh. Raises WorkerUnavailable if the new one does not
        start: the old one goes on."""
        self._settings = settings
        await self.replace(
            (settings, self._tracking_key),
            stop_timeout=settings.delivery.shutdown_grace + STOP_MARGIN,
        )

    async def attempt(self, msg: QueuedMessage) -> AttemptRecord:
        record: AttemptRecord = await self.call(msg)
        return record

    async def provider_status(self) -> list[dict[str, Any]]:
        """The providers as this node's delivery process sees them (routing/status.py)."""
        status: list[dict[str, Any]] = await self.call(PROVIDER_STATUS)
        return status


async def _setup(
    hello: tuple[Settings, bytes], send: Callable[[object], None]
) -> tuple[Callable[[Any], None], Callable[[], Any]]:
    from mailgate.delivery.attempt import Deliverer
    from mailgate.delivery.dkim import DkimSigner
    from mailgate.events.rewrite import Personalizer
    from mailgate.events.tokens import Signer
    from mailgate.logs import setup_logging
    from mailgate.routing.router import Router

    settings, tracking_key = hello
    setup_logging(settings.server.log_level, settings.server.log_format)
    signer = DkimSigner.from_settings(settings)
    if signer.domains():
        await signer.start_processes(SIGNING_PROCESSES)
    personalizer = None
    if tracking_key and settings.http.public_url:
        personalizer = Personalizer(
            Signer(tracking_key), settings.http.public_url, settings.bounce_domain
        )
    deliverer = Deliverer(settings, Router(settings), signer, personalizer=personalizer)
    # At close the relay waited for the attempts it wanted (its shutdown grace); the rest
    # stop.

    async def handle(request: QueuedMessage | str) -> Any:
        if request == PROVIDER_STATUS:
            return deliverer.provider_status()
        assert isinstance(request, QueuedMessage)
        return await deliverer.attempt(request)

    handlers = answer_each(
        handle,
        send,
        name=lambda msg: f"attempt of {getattr(msg, 'id', msg)}",
        finish=deliverer.close,
    )
    collector.settle()
    return handlers


def main() -> None:
    # What _setup imports, loaded before the hello comes: the relay starts this process
    # while it opens its store (WorkerPool.prestart) and greets it once that is done.
    import mailgate.delivery.attempt
    import mailgate.delivery.dkim
    import mailgate.events.rewrite
    import mailgate.events.tokens
    import mailgate.logs
    import mailgate.routing.router  # noqa: F401

    run_child(_setup)


if __name__ == "__main__":
    main()

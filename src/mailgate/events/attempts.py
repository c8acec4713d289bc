"""Waiting for the first delivery attempt of a message (MessagePipe's synchronous send).

The scheduler of this node reports every recorded attempt, which wakes the waiters at
once; another node's attempts are seen by reading the store every ``poll`` seconds, so a
request waits on any node of a PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

from mailgate.store import Store

FINAL = frozenset({"sent", "delivered", "bounced", "failed", "cancelled"})


def attempted(delivery: dict[str, Any]) -> bool:
    """Has this delivery had its first attempt (or an end without one)?"""
    if delivery["status"] in FINAL:
        return True
    return bool(delivery["attempts"]) and delivery["lease_owner"] is None


class FirstAttempts:
    def __init__(self, store: Store, *, poll: float = 0.25) -> None:
        self._store = store
        self._poll = poll
        self._waiters: dict[str, list[asyncio.Event]] = {}

    def recorded(self, message_ids: Iterable[str]) -> None:
        """Attempts of these messages were committed by this node."""
        for message_id in message_ids:
            for event in self._waiters.get(message_id, ()):
                event.set()

    async def wait(
        self, message_ids: Sequence[str], timeout: float
    ) -> dict[str, list[dict[str, Any]]]:
        """The deliveries of these messages once each has been attempted, or as they are
        when ``timeout`` runs out."""
        event = asyncio.Event()
        for message_id in message_ids:
            self._waiters.setdefault(message_id, []).append(event)
        deadline = time.monotonic() + timeout
        try:
            while True:
                event.clear()
                found = await self._store.deliveries_of(message_ids)
                done = all(attempted(d) for dels in found.values() for d in dels)
                left = deadline - time.monotonic()
                if done or left <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(self._poll, left))
        finally:
            for message_id in message_ids:
                waiters = self._waiters.get(message_id)
                if waiters is not None:
                    waiters.remove(event)
                    if not waiters:
                        del self._waiters[message_id]

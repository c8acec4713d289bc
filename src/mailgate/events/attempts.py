"""Waiting for the first delivery attempt of a message (MessagePipe's synchronous send).

This node's scheduler reports every attempt it records, with the deliveries' new state,
which answers the waiters at once without reading the store. Attempts made by another
node of a PostgreSQL cluster are found by one shared read of all the waited-for messages
every ``poll`` seconds, whatever the number of waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from mailgate.exceptions import StoreUnavailable
from mailgate.models import DeliveryUpdate
from mailgate.store import Store

FINAL = frozenset({"sent", "delivered", "bounced", "failed", "cancelled"})


def attempted(delivery: dict[str, Any]) -> bool:
    """Has this delivery had its first attempt (or an end without one)?"""
    if delivery["status"] in FINAL:
        return True
    return bool(delivery["attempts"]) and delivery["lease_owner"] is None


class _Waiter:
    """One request's messages: how many deliveries each has, and what is known of them."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.found: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in counts}
        self.done = asyncio.Event()

    def add(self, message_id: str, deliveries: Iterable[dict[str, Any]]) -> None:
        known = self.found[message_id]
        for delivery in deliveries:
            if attempted(delivery):
                known[delivery["rcpt_idx"]] = delivery
        if all(len(self.found[m]) >= n for m, n in self.counts.items()):
            self.done.set()


class FirstAttempts:
    def __init__(self, store: Store, *, poll: float = 0.25) -> None:
        self._store = store
        self._poll = poll
        self._waiters: dict[str, list[_Waiter]] = {}
        self._poller: asyncio.Task[None] | None = None

    def recorded(self, updates: Iterable[DeliveryUpdate]) -> None:
        """Attempt results this node committed."""
        for u in updates:
            for waiter in self._waiters.get(u.message_id, ()):
                delivery = {
                    "rcpt_idx": u.rcpt_idx,
                    "recipient": u.recipient,
                    "status": u.status.value,
                    "attempts": u.attempts,
                    "lease_owner": None,
                    "provider": u.provider,
                    "last_response": u.response,
                    "provider_message_id": u.provider_message_id,
                }
                waiter.add(u.message_id, [delivery])

    async def wait(self, counts: dict[str, int], timeout: float) -> dict[str, list[dict[str, Any]]]:
        """The deliveries of these messages (``counts``: message id -> its recipients)
        once each has been attempted, or as they are when ``timeout`` runs out."""
        waiter = _Waiter(counts)
        for message_id in counts:
            self._waiters.setdefault(message_id, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_store(), name="mailgate-first-attempts")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.done.wait(), timeout)
        finally:
            for message_id in counts:
                waiters = self._waiters.get(message_id)
                if waiters is not None:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[message_id]
        if waiter.done.is_set():
            return {m: [known[i] for i in sorted(known)] for m, known in waiter.found.items()}
        return await self._store.deliveries_of(list(counts))

    async def _poll_store(self) -> None:
        """While anyone waits: one read of every waited-for message per ``poll`` seconds
        (attempts made by other nodes)."""
        while self._waiters:
            await asyncio.sleep(self._poll)
            ids: Sequence[str] = [m for m, ws in self._waiters.items() if ws]
            if not ids:
                continue
            try:
                found = await self._store.deliveries_of(ids)
            except StoreUnavailable:  # the next round reads again
                continue
            for message_id, deliveries in found.items():
                for waiter in list(self._waiters.get(message_id, ())):
                    waiter.add(message_id, deliveries)

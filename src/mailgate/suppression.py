"""The suppression list in memory: checked for every recipient without a query.

Loaded at start, updated at once by this process's own changes, and re-read when the
table changes under it (the CLI or another node): a cheap fingerprint query every few
seconds tells. The per-domain unsubscribes (:attr:`SuppressionList.unsubscribes`, pairs of
address and sending domain) are kept the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgate.exceptions import StoreUnavailable
from mailgate.store import Store

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


class SuppressionList:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._addresses: set[str] = set()
        self._fingerprint: tuple[int, float] | None = None
        self.unsubscribes: set[tuple[str, str]] = set()
        self._unsub_fingerprint: tuple[int, float] | None = None
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and address.lower() in self._addresses

    def added(self, addresses: list[str]) -> None:
        self._addresses.update(a.lower() for a in addresses)

    def removed(self, address: str) -> None:
        self._addresses.discard(address.lower())

    def unsubscribed(self, address: str, domain: str) -> None:
        self.unsubscribes.add((address.lower(), domain.lower()))

    async def load(self) -> None:
        fingerprint = await self._store.suppressions.fingerprint()
        if fingerprint != self._fingerprint:
            self._addresses = await self._store.suppressions.addresses()
            self._fingerprint = fingerprint
        fingerprint = await self._store.tracking.fingerprint()
        if fingerprint != self._unsub_fingerprint:
            # In place: the acceptor holds this set.
            fresh = await self._store.tracking.unsubscribed()
            self.unsubscribes.intersection_update(fresh)
            self.unsubscribes.update(fresh)
            self._unsub_fingerprint = fingerprint

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh(), name="mailgate-suppressions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.load()
            except StoreUnavailable as exc:
                log.warning("could not refresh the suppression list: %s", exc)

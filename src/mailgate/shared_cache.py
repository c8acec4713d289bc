"""A bounded cache of values that expire, each fetched once however many ask at once.

Callers that miss while a fetch of the same key is under way wait for that fetch instead
of making their own (under load, every request in flight when an entry expired used to
read the store or ask DNS again). The fetch runs as a task of its own: a caller that goes
away does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedCache(Generic[K, V]):
    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._pending: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[tuple[V, float]]]) -> V:
        """The cached value of ``key``, or the one ``fetch`` returns with its lifetime (s)."""
        hit = self._values.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, fetch))
            task.add_done_callback(_retrieve)  # its callers may all have gone
            self._pending[key] = task
        return await asyncio.shield(task)

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[tuple[V, float]]]) -> V:
        try:
            value, ttl = await fetch()
        finally:
            del self._pending[key]
        self._values[key] = (self._clock() + ttl, value)
        self._values.move_to_end(key)
        while len(self._values) > self._size:
            self._values.popitem(last=False)
        return value


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()

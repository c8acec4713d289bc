"""API key lookups: one store read per key while the cache is cold, however many requests
arrive meanwhile (under load every request in flight when the entry expired used to read
the store, about 15% of the relay's CPU); a caller that goes away does not fail the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from mailgate.config import load_settings
from mailgate.credentials import hash_key
from mailgate.ingress.http import ApiContext
from mailgate.store.keys import KeyRecord

KEY = "mg_0123456789ab_" + "x" * 24


class _Keys:
    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()

    async def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        await self.release.wait()
        return KeyRecord(key_id, "app", hash_key(KEY), "send", (), 0.0, None)

    def note_used(self, key_id: str, now: float) -> None:
        pass


class _Store:
    def __init__(self) -> None:
        self.keys = _Keys()


def _context(store: Any) -> ApiContext:
    settings = load_settings(data={"delivery": {"enabled": False}})
    return ApiContext(settings=settings, store=store, acceptor=None, limiter=None)  # type: ignore[arg-type]


def test_concurrent_lookups_share_one_read() -> None:
    async def run() -> None:
        store = _Store()
        ctx = _context(store)
        lookups = [asyncio.ensure_future(ctx._lookup(KEY)) for _ in range(50)]
        await asyncio.sleep(0)
        lookups[0].cancel()  # its client went away: the others still get the key
        await asyncio.sleep(0)
        store.keys.release.set()
        results = await asyncio.gather(*lookups[1:])
        assert {c.id for c in results if c is not None} == {"0123456789ab"}
        assert store.keys.reads == 1
        assert (await ctx._lookup(KEY)) is not None and store.keys.reads == 1  # cached

    asyncio.run(run())

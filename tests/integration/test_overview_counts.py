"""Story: the dashboard's overview charts what the relay accepted minute by minute. Mail
scheduled for later is accepted too (its first event is "scheduled", not "queued"), and
it counts once: when it goes out, no second acceptance is recorded."""

from __future__ import annotations

import asyncio

from mailgate.models import NewMessage
from mailgate.store import Store
from mailgate.store.ui import events_per_minute

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 60  # a whole minute


def test_scheduled_mail_counts_as_accepted(db_url: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            now = NewMessage("now", T0 + 1, "a@example.com", ["b@example.net"], b"x")
            later = NewMessage(
                "later", T0 + 2, "a@example.com", ["c@example.net", "d@example.net"], b"x"
            )
            later.scheduled_at = T0 + 3600
            await store.enqueue([now, later])
            series = await events_per_minute(store, T0 + 30, 5)
            assert series["accepted"] == [0, 0, 0, 0, 3]  # one event per recipient
        finally:
            await store.close()

    asyncio.run(scenario())

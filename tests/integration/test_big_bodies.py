"""Story: a big message's body is stored once and read back whole wherever it is read
(the delivery process, the dashboard, an operator's bounce), then goes with retention.
On SQLite it lives in ``message_bodies``, written in place by blob I/O (revision 0007);
on PostgreSQL in ``messages.raw``, where nodes of revision 0006 read it too."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import func, select
from tests.conftest import sent_updates

from mailgate.store import NewMessage, Store
from mailgate.store.bodies import BodyReader
from mailgate.store.schema import message_bodies, messages
from mailgate.store.ui import message_raw

T0 = 1_700_000_000.0
DAY = 86400.0
HEAD = b"Received: from client by relay.test with ESMTP id big; Tue, 14 Nov 2023\r\n"


def big_raw(n: int, size: int) -> bytes:
    """``size`` bytes that differ at every offset (a shifted or cut write shows)."""
    out = bytearray()
    block = hashlib.sha256(str(n).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return b"Subject: big\r\n\r\n" + bytes(out[: size - 16])


def msg(i: int, raw: bytes, at: float) -> NewMessage:
    return NewMessage(
        id=f"big-{i}",
        created_at=at,
        sender="app@example.com",
        recipients=["a@dest.test"],
        raw=raw,
        subject="big",
        head=HEAD,
    )


async def where_stored(store: Store, message_id: str) -> tuple[int, int]:
    """(len(messages.raw), len(message_bodies.raw)); -1 for a missing row."""
    async with store.engine.connect() as conn:
        in_row = (
            await conn.execute(
                select(func.length(messages.c.raw)).where(messages.c.id == message_id)
            )
        ).scalar()
        apart = (
            await conn.execute(
                select(func.length(message_bodies.c.raw)).where(
                    message_bodies.c.message_id == message_id
                )
            )
        ).scalar()
    return (-1 if in_row is None else int(in_row)), (-1 if apart is None else int(apart))


def test_big_body_round_trip_and_retention(db_url: str) -> None:
    """Two big bodies and a small one: each read back byte for byte by the delivery
    process's reader and the dashboard; retention empties the oldest body first and then
    deletes the messages, their body rows with them."""
    sqlite = db_url.startswith("sqlite")
    bodies = {1: big_raw(1, 3_000_001), 2: big_raw(2, 1024 * 1024), 3: big_raw(3, 300_000)}

    async def scenario() -> None:
        store = await Store.open(db_url)
        reader = BodyReader(db_url)
        try:
            await store.enqueue([msg(i, raw, T0 + i) for i, raw in bodies.items()])
            for i, raw in bodies.items():
                whole = HEAD + raw
                in_row, apart = await where_stored(store, f"big-{i}")
                if sqlite and i != 3:  # 1 MB on: apart, written in place
                    assert (in_row, apart) == (0, len(whole))
                else:
                    assert (in_row, apart) == (len(whole), -1)
                assert await reader.read(f"big-{i}") == whole
                assert await message_raw(store, f"big-{i}") == whole

            claimed = await store.claim("n:1", T0 + 10, 10, T0 + 600)
            assert {m.id: (m.raw, m.size) for m in claimed} == {
                f"big-{i}": (b"", len(HEAD + raw)) for i, raw in bodies.items()
            }  # all over the claim's inline size: read where they are sent
            await store.record("n:1", T0 + 20, sent_updates(claimed))

            # The oldest body only: its row apart goes, the others stay whole.
            assert await store.retention.purge_bodies(T0 + 30, T0 + 8 * DAY, 1) == 1
            assert await where_stored(store, "big-1") == (0, -1)
            assert await reader.read("big-1") == b""
            assert await message_raw(store, "big-1") == b""
            assert await reader.read("big-2") == HEAD + bodies[2]

            # Records: the messages go, and with them (ON DELETE CASCADE) big-2's body row.
            assert await store.retention.purge_messages(T0 + 30, 10) == 3
            async with store.engine.connect() as conn:
                left = (
                    await conn.execute(select(func.count()).select_from(message_bodies))
                ).scalar_one()
            assert left == 0
        finally:
            await reader.close()
            await store.close()

    asyncio.run(scenario())

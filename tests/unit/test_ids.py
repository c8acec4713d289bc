"""mailgate.ids.new_id: UUIDv7 queue ids that sort by creation time."""

from __future__ import annotations

import re
import time
import uuid

from mailgate.ids import new_id

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def timestamp_ms(queue_id: str) -> int:
    return uuid.UUID(queue_id).int >> 80


def test_new_id_is_a_uuid7() -> None:
    for _ in range(200):
        queue_id = new_id()
        assert CANONICAL.match(queue_id), queue_id
        parsed = uuid.UUID(queue_id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == queue_id


def test_new_id_carries_the_current_time_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    queue_id = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= timestamp_ms(queue_id) <= after


def test_ids_sort_by_time() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_id())
        time.sleep(0.003)
    assert sorted(ids) == ids
    stamps = [timestamp_ms(i) for i in ids]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_ids_are_unique() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000


def test_random_bits_differ_within_one_millisecond() -> None:
    ids = [new_id() for _ in range(100)]
    tails = {uuid.UUID(i).int & ((1 << 62) - 1) for i in ids}
    assert len(tails) == 100

"""mailgate.ids.new_id: UUIDv7 queue ids that sort by creation time."""

from __future__ import annotations

import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from mailgate.ids import new_id, random_bytes

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


def test_threads_never_share_random_bytes() -> None:
    """A batch builds its messages in a thread while the loop accepts others: each thread
    reads its own block, so no two ids or boundaries are made from the same bytes."""
    out: list[list[bytes]] = [[] for _ in range(4)]

    def take(i: int) -> None:
        out[i] = [random_bytes(16) for _ in range(2000)]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(take, range(4)))
    seen = [b for part in out for b in part]
    assert all(len(b) == 16 for b in seen)
    assert len(set(seen)) == len(seen)


def test_random_bytes_gives_what_is_asked() -> None:
    assert [len(random_bytes(n)) for n in (0, 1, 10, 4095, 4096, 4097, 10_000)] == [
        0,
        1,
        10,
        4095,
        4096,
        4097,
        10_000,
    ]


def test_a_forked_child_reads_its_own_random_bytes() -> None:
    random_bytes(16)  # the parent holds a block with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would use next
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_bytes(16)

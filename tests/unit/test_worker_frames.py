"""worker_frames.FrameProtocol: a child's answers read from its pipe as they arrive."""

from __future__ import annotations

import asyncio
import pickle
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.worker_frames import READY, FrameProtocol, frame


def _wire(obj: object) -> bytes:
    return b"".join(bytes(part) for part in frame(obj))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(),
            st.text(max_size=50),
            st.binary(max_size=3000).map(lambda b: {"body": pickle.PickleBuffer(b)}),
        ),
        max_size=8,
    ),
    st.integers(0, 2**32),
)
def test_frames_split_anywhere_arrive_whole_and_in_order(objs: list[Any], seed: int) -> None:
    async def main() -> None:
        got: list[tuple[Any, int]] = []
        eof: list[bool] = []
        protocol = FrameProtocol(
            lambda obj, size: got.append((obj, size)), lambda: eof.append(True)
        )
        wire = READY.pack(0) + b"".join(_wire(o) for o in objs)
        rng = random.Random(seed)
        pos = 0
        while pos < len(wire):  # pieces of any size, as a pipe hands them over
            n = rng.randint(1, 4000)
            protocol.data_received(wire[pos : pos + n])
            pos += n
        assert protocol.ready.result() == READY.pack(0)
        expected = [{"body": bytes(o["body"].raw())} if isinstance(o, dict) else o for o in objs]
        assert [obj for obj, _ in got] == expected
        sizes = [sum(len(bytes(p)) for p in frame(o)[1:]) for o in objs]
        assert [size for _, size in got] == sizes
        protocol.connection_lost(None)
        assert eof == [True]

    asyncio.run(main())


def test_a_big_frame_is_read_once_it_is_all_there() -> None:
    async def main() -> None:
        got: list[Any] = []
        protocol = FrameProtocol(lambda obj, size: got.append(obj), lambda: None)
        body = bytes(range(256)) * 40_000  # 10 MB beside the pickle
        wire = READY.pack(0) + _wire({"raw": pickle.PickleBuffer(body)})
        for pos in range(0, len(wire), 65536):
            protocol.data_received(wire[pos : pos + 65536])
            assert len(got) == (1 if pos + 65536 >= len(wire) else 0)
        assert got == [{"raw": body}]

    asyncio.run(main())


def test_a_child_that_closes_before_ready_fails_the_wait() -> None:
    async def main() -> None:
        protocol = FrameProtocol(lambda obj, size: None, lambda: None)
        protocol.connection_lost(None)
        assert isinstance(protocol.ready.exception(), ConnectionError)

    asyncio.run(main())

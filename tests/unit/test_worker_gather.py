"""A child process's gathered frames (workers.ChildProcess, gather=True, through
worker_frames.GatheredFrames): the frames sent in one turn of the loop go out in one
write at its end, in order, a big body's buffers as they are; none is written to a child
started after the one they were sent to."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

from mailgate.worker_frames import frame
from mailgate.workers import ChildProcess


class _Pipe:
    """A child's stdin that records each call (one system call each on a real pipe)."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.closed_after: int | None = None  # how many calls came before close()

    def close(self) -> None:
        self.closed_after = len(self.calls)

    def writelines(self, parts: Any) -> None:
        self.calls.append([bytes(p) for p in parts])

    def write(self, data: Any) -> None:
        self.calls.append([bytes(data)])


class _Proc:
    def __init__(self) -> None:
        self.stdin = _Pipe()
        self.returncode: int | None = None


def _child(loop: asyncio.AbstractEventLoop) -> tuple[ChildProcess, _Proc]:
    child = ChildProcess("x", None, what="test process", on_message=lambda m: None, gather=True)
    proc = _Proc()
    child._attach(proc, loop.create_future())  # type: ignore[arg-type]  # ready, no end of file
    return child, proc


def _written(calls: list[list[bytes]]) -> bytes:
    return b"".join(b"".join(c) for c in calls)


def test_frames_of_one_turn_go_out_in_one_write_in_order() -> None:
    async def main() -> None:
        child, proc = _child(asyncio.get_running_loop())
        for i in range(20):
            child.send((i, "request"))
        assert proc.stdin.calls == []  # not yet: at the end of the turn
        await asyncio.sleep(0)
        assert len(proc.stdin.calls) == 1
        expected = b"".join(b"".join(frame((i, "request"))) for i in range(20))
        assert _written(proc.stdin.calls) == expected
        child.send((20, "next turn"))
        await asyncio.sleep(0)
        assert len(proc.stdin.calls) == 2

    asyncio.run(main())


def test_a_big_body_goes_out_after_what_was_gathered_before_it() -> None:
    async def main() -> None:
        child, proc = _child(asyncio.get_running_loop())
        body = b"x" * 100_000
        child.send((1, "small"))
        child.send((2, pickle.PickleBuffer(body)))  # travels beside the pickle
        child.send((3, "small again"))
        await asyncio.sleep(0)
        parts = [
            frame((1, "small")),
            frame((2, pickle.PickleBuffer(body))),
            frame((3, "small again")),
        ]
        assert _written(proc.stdin.calls) == b"".join(b"".join(bytes(x) for x in p) for p in parts)
        assert [bytes(body)] in proc.stdin.calls  # the body itself was not joined to others

    asyncio.run(main())


def test_frames_for_a_child_that_is_gone_are_not_written_to_the_next() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        child, old = _child(loop)
        child.send((1, "for the old child"))
        new = _Proc()
        child._attach(new, loop.create_future())  # type: ignore[arg-type]  # started again
        await asyncio.sleep(0)
        assert old.stdin.calls == [] and new.stdin.calls == []
        child.send((2, "for the new one"))
        await asyncio.sleep(0)
        assert _written(new.stdin.calls) == b"".join(frame((2, "for the new one")))

    asyncio.run(main())


def test_close_writes_what_was_gathered_before_the_end_of_file() -> None:
    async def main() -> None:
        child, proc = _child(asyncio.get_running_loop())
        reader = child._reader
        assert reader is not None

        async def wait() -> int:
            reader.set_result(None)  # the child read the end of file and exited
            return 0

        proc.wait = wait  # type: ignore[attr-defined]
        child.send((1, "last"))
        await child.close()
        assert proc.stdin.calls == [list(map(bytes, frame((1, "last"))))]
        assert proc.stdin.closed_after == 1  # the end of file came after the frame

    asyncio.run(main())

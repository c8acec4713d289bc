"""A child whose exit is seen before the end of its output (workers.ChildProcess.ready):
the requests in that gap wait for the restart instead of failing with "no ... process is
running"."""

from __future__ import annotations

import asyncio

from mailgate.workers import ChildProcess


class _Proc:
    def __init__(self) -> None:
        self.returncode: int | None = None
        self.stdin = None

    async def wait(self) -> int | None:
        return self.returncode


def test_a_child_seen_exited_before_its_output_ended_is_waited_for() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        child = ChildProcess("x", None, what="test process", on_message=lambda m: None)
        proc, eof = _Proc(), loop.create_future()
        child._attach(proc, eof)  # type: ignore[arg-type]
        assert child.alive
        proc.returncode = -9  # its exit code came first; its stdout is not read to the end yet
        restarted = asyncio.Event()

        async def start() -> None:  # the restart, without a real process
            child._attach(_Proc(), loop.create_future())  # type: ignore[arg-type]
            restarted.set()

        child.start = start  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(child.ready())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiting.done()  # it did not answer "not running" at once
        child._stdout_closed(proc, eof)  # type: ignore[arg-type]  # the end is read: restart
        assert await asyncio.wait_for(waiting, 5) is True
        assert restarted.is_set() and child.alive

    asyncio.run(main())

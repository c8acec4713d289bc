"""What the SMTP and HTTP load clients share: their side of the control protocol with
the orchestrator (READY <sessions> on stdout, then GO {json} on stdin, then RESULT {json}
on stdout; EOF on stdin means stop), the Plan that paces and bounds a run, and the
connection each session holds."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import HOST

LATE_START = 0.05  # paced mode: a message starting this far behind its slot is "late"


@dataclass
class Plan:
    """When to stop: at ``end`` (wall clock), or when the quota of messages is used up.

    With ``rate`` the load is open-loop: message i of this process starts at
    ``paced_from + i / rate`` whatever the replies, so the offered load does not fall
    when the server slows down; a start more than LATE_START behind its slot (every
    session was busy) is counted, because then the offered rate was not met.
    """

    start: float
    end: float
    quota: int | None = None  # messages left to send (fill mode); None: send until ``end``
    taken: int = 0
    rate: float | None = None  # paced: messages/s this process offers; None: closed loop
    paced_from: float = 0.0
    slots: int = 0
    late: int = 0  # slots inside the window started more than LATE_START late

    def take(self) -> bool:
        if time.time() >= self.end:
            return False
        if self.quota is None:
            return True
        if self.taken >= self.quota:
            return False
        self.taken += 1
        return True

    async def pace(self) -> None:
        """Paced mode: wait for the next free slot of the schedule."""
        if self.rate is None:
            return
        due = self.paced_from + self.slots / self.rate
        self.slots += 1
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -LATE_START and self.start <= due < self.end:
            self.late += 1

    def give_back(self) -> None:
        """A failed message is retried so a fill queues exactly the asked number."""
        if self.quota is not None:
            self.taken -= 1


class Connection:
    """One session's connection to the server under test, or none after a failure."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self._port)

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def stdin_reader() -> asyncio.StreamReader:
    """Control lines from the orchestrator arrive on stdin; EOF means 'stop now'."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def ready_then_go(connected: int) -> dict[str, Any] | None:
    """Say READY with the sessions connected; the GO that follows (None on anything else)."""
    control = await stdin_reader()
    say(f"READY {connected}")
    line = await control.readline()
    if not line.startswith(b"GO "):
        return None
    return dict(json.loads(line[3:]))


def say_result(result: dict[str, Any]) -> None:
    """RESULT with the running event loop's name (so the report can say it was uvloop)."""
    loop = asyncio.get_running_loop()
    result["loop"] = f"{type(loop).__module__}.{type(loop).__qualname__}"
    say("RESULT " + json.dumps(result, separators=(",", ":")))

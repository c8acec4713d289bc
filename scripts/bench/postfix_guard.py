"""bench-postfix's guard, a child process: ``python -m bench.postfix_guard``.

The bench's other children die with it even after a kill -9 (processes.py: the kernel's
parent-death signal), but Postfix's master and smtp-sink change their credentials (the
sink drops to the postfix user, master switches to mail_owner for a while), and the
kernel clears that setting when they do. So the orchestrator tells this guard about them
and about the temp dir, on its stdin:

    PID <pid> <create time>
    DIR <path>

and the guard waits for EOF on stdin, which comes however the orchestrator ends (its
pipe's write end closes with it). Then it stops each process that is still the one it was
told about (same pid and create time) as ``postfix stop`` would (SIGTERM; SIGKILL after 10
s, to master's children too), and removes the directories. After an orderly run there is
nothing left to do: the orchestrator has stopped everything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil

from bench.processes import child_env

STOP_TIMEOUT = 10.0


class Guard:
    """The orchestrator's side: start the guard, tell it what to stop, close it at the end.
    It is not one of the bench's Children: those get SIGTERM when the bench stops, and a
    parent-death signal, while the guard must live on to see the EOF."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.postfix_guard",
            stdin=asyncio.subprocess.PIPE, env=child_env(), start_new_session=True,
        )  # fmt: skip

    async def _say(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        await self._proc.stdin.drain()

    async def watch(self, pid: int) -> None:
        """Stop this process if the orchestrator dies without doing it."""
        with contextlib.suppress(psutil.Error):
            await self._say(f"PID {pid} {psutil.Process(pid).create_time()!r}")

    async def watch_dir(self, path: Path) -> None:
        await self._say(f"DIR {path}")

    async def close(self) -> None:
        """At the end of an orderly run: EOF; it finds nothing left and exits."""
        if self._proc is None or self._proc.stdin is None:
            return
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT + 20)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


def stop(pid: int, created: float) -> None:
    """SIGTERM the process and wait; SIGKILL it and its children if they linger."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.01:
            return  # the pid was reused: not ours
        family = [proc, *proc.children(recursive=True)]
        proc.send_signal(signal.SIGTERM)
    except psutil.Error:
        return
    reap(family, STOP_TIMEOUT)


def reap(family: list[psutil.Process], timeout: float) -> None:
    """Wait up to ``timeout`` s until none of ``family`` runs (a zombie waits for init to
    reap it: it counts as gone), then SIGKILL the rest."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in family if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the orchestrator's to handle
    pids: list[tuple[int, float]] = []
    dirs: list[str] = []
    for line in sys.stdin:
        kind, _, rest = line.strip().partition(" ")
        if kind == "PID":
            pid, created = rest.split()
            pids.append((int(pid), float(created)))
        elif kind == "DIR":
            dirs.append(rest)
    for pid, created in reversed(pids):
        stop(pid, created)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()

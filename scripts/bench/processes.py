"""The orchestrator's child processes: started so that none outlives it (even after a
kill -9), stopped in order on any exit, read line by line with timeouts; and the RSS of a
process tree, sampled while a load runs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from typing import Any

import psutil

from bench import SCRIPTS

PIPE_LIMIT = 1 << 26  # a client's RESULT line carries every latency sample
PR_SET_PDEATHSIG = 1
RSS_INTERVAL = 0.1


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGTERMs the child if the orchestrator dies, even by kill -9."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env() -> dict[str, str]:
    """The caller's environment minus MAILGATE_* overrides that would change the config,
    with scripts/ on PYTHONPATH so that ``python -m bench.<child>`` finds this package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), env.get("PYTHONPATH")]))
    return env


class BenchError(Exception):
    """A scenario could not run (a child failed to start, say); the message says why."""


class Children:
    """Every child process we start, so all of them are stopped on any exit."""

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=child_env(),
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=_die_with_parent,
            limit=PIPE_LIMIT,
            **kwargs,
        )
        self._procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode if proc.returncode is not None else -1

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(p, 10.0) for p in list(self._procs)))

    def kill_all_now(self) -> None:
        """Last resort from synchronous code (the event loop is gone)."""
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)


async def read_line(proc: asyncio.subprocess.Process, what: str, timeout: float) -> str:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        raise BenchError(f"{what}: no answer within {timeout:.0f} s") from None
    if not line:
        raise BenchError(f"{what}: exited (code {await proc.wait()}) without answering")
    return line.decode().strip()


class RssSampler:
    """Peak and latest RSS of one process and its children (mailgate's delivery and signing
    processes), summed, sampled every 100 ms while in the ``async with``."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> int:
        with contextlib.suppress(psutil.Error):
            rss = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            self.last = rss
            self.peak = max(self.peak, self.last)
        return self.last

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_INTERVAL)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()


# mailgate's child processes: a part of the command line, and the role it names.
CHILD_ROLES = (
    ("writer_process", "writer"),
    ("delivery.process", "delivery"),
    ("signing", "signing"),
    ("webhook", "webhooks"),
)
# Which of the bench's processes a command line is, first match: mailgate's children
# before the relay itself, whose module names they share.
CPU_ROLES = (
    *CHILD_ROLES,
    ("mailgate", "relay"),
    ("bench.http_client", "clients"),
    ("bench.http_bare", "bare app"),
    ("bench.sink", "sink"),
)


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process this bench started, by role
    (CPU_ROLES; "other" for the rest)."""
    out: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
            role = next((r for key, r in CPU_ROLES if key in cmd), "other")
            out[role] = out.get(role, 0.0) + times.user + times.system
    return out


async def cpu_probe() -> dict[str, Any]:
    """A load's probe (orchestrator.Probe): the CPU seconds by role, at a window's edge."""
    return {"cpu": cpu_seconds()}


def cpu_ms_per(edges: dict[str, Any], count: int) -> dict[str, float]:
    """CPU milliseconds per ``count`` (a window's requests), by role, between the edges
    that cpu_probe took: where a request's CPU goes. A role that started or ended inside
    the window is left out."""
    if count <= 0 or not edges:
        return {}
    start, end = edges["start"]["cpu"], edges["end"]["cpu"]
    return {
        role: 1000 * (end[role] - start[role]) / count
        for role in sorted(end, key=lambda r: -(end[r] - start.get(r, end[r])))
        if role in start
    }

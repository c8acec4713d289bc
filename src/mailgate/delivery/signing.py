"""DKIM signing in child processes that the event loop feeds through pipes.

Why processes: dkimpy's header canonicalization is Python, so in threads it holds the GIL
the event loop needs, and SMTP accepts waited while the relay signed. Why pipes and not
``ProcessPoolExecutor``: its manager thread needs that same GIL to hand each job over,
which capped signing at about 600 messages/s on a busy loop. Here the loop writes requests
straight into each worker's stdin and reads answers from its stdout; requests pipeline.

A worker reads until end of file on stdin, so it exits by itself when the relay stops or
dies (nobody else holds its stdin open). A worker that dies fails its requests with
:class:`SigningUnavailable` (the caller signs those in a thread) and is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import pickle
import signal
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_LEN = struct.Struct("!I")
KeySpec = tuple[str, str, str]  # domain, selector, key file


class SigningUnavailable(Exception):
    """The signing process died before answering."""


@dataclass
class _Worker:
    proc: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[bytes]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


class SigningProcesses:
    def __init__(self, keys: list[KeySpec], processes: int) -> None:
        self._keys = keys
        self._count = processes
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the workers and wait until each has loaded the keys (or raise)."""
        self._workers = list(await asyncio.gather(*(self._spawn() for _ in range(self._count))))

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailgate.delivery.signing",
            json.dumps(self._keys),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readexactly(_LEN.size), 30)
        except (asyncio.IncompleteReadError, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SigningUnavailable("a DKIM signing process did not start") from None
        if _LEN.unpack(ready)[0] != 0:
            raise SigningUnavailable("a DKIM signing process said something unexpected")
        worker = _Worker(proc)
        worker.reader = asyncio.create_task(self._read(worker), name="mailgate-dkim-reader")
        return worker

    async def sign(self, raw: bytes, envelope_sender: str) -> bytes:
        """The DKIM-Signature header(s) for ``raw``, from the least busy worker."""
        alive = [w for w in self._workers if w.proc.returncode is None and w.reader]
        if not alive:
            raise SigningUnavailable("no DKIM signing process is running")
        worker = min(alive, key=lambda w: len(w.pending))
        rid = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.pending[rid] = future
        data = pickle.dumps((rid, raw, envelope_sender), protocol=pickle.HIGHEST_PROTOCOL)
        assert worker.proc.stdin is not None
        try:
            worker.proc.stdin.write(_LEN.pack(len(data)) + data)
        except (ConnectionError, RuntimeError) as exc:
            worker.pending.pop(rid, None)
            raise SigningUnavailable(str(exc)) from None
        return await future

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = _LEN.unpack(await stdout.readexactly(_LEN.size))
                rid, ok, payload = pickle.loads(await stdout.readexactly(size))
                future = worker.pending.pop(rid, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(RuntimeError(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(SigningUnavailable("the DKIM signing process died"))
        worker.pending.clear()
        worker.reader = None
        if not self._closing:
            code = worker.proc.returncode
            log.error("a DKIM signing process exited (code %s); starting another", code)
            task = asyncio.create_task(self._replace(worker))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _replace(self, dead: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            dead.proc.kill()
        await dead.proc.wait()
        try:
            fresh = await self._spawn()
        except (SigningUnavailable, OSError) as exc:
            log.error("could not start a DKIM signing process: %s", exc)
            return
        if self._closing:
            await self._stop(fresh)
            return
        self._workers = [fresh if w is dead else w for w in self._workers]

    async def close(self) -> None:
        """Stop the workers: end of file on their stdin, then wait (they finish queued work)."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*(self._stop(w) for w in self._workers))
        self._workers = []

    @staticmethod
    async def _stop(worker: _Worker) -> None:
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
        try:
            await asyncio.wait_for(worker.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await worker.proc.wait()
        if worker.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.reader

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]


def _serve(keys: list[KeySpec]) -> None:
    """The worker: frames of pickled (id, raw, sender) in, (id, ok, header or error) out."""
    from mailgate.delivery.dkim import DkimKey, DkimSigner

    signer = DkimSigner([DkimKey.load(d, s, Path(p)) for d, s, p in keys])
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(_LEN.pack(0))  # ready
    out.flush()
    while True:
        head = inp.read(_LEN.size)
        if len(head) < _LEN.size:
            return  # end of file: the relay stopped or died
        (size,) = _LEN.unpack(head)
        rid, raw, sender = pickle.loads(inp.read(size))
        answer: tuple[int, bool, Any]
        try:
            answer = (rid, True, signer.sign(raw, sender))
        except Exception as exc:
            answer = (rid, False, f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_LEN.pack(len(data)) + data)
        out.flush()


if __name__ == "__main__":
    # Ctrl-C in a terminal and systemd's SIGTERM reach the whole group: the relay stops
    # in order and closes our stdin, and we exit then, after the signatures it still needs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Signing is background work next to the relay's event loop: when both want a core,
    # the loop (SMTP replies) goes first.
    with contextlib.suppress(OSError):  # a sandbox may refuse; signing works regardless
        os.nice(10)
    # Warnings (a message not signed, and why) go to the relay's stderr in its format.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _serve([tuple(k) for k in json.loads(sys.argv[1])])  # type: ignore[misc]

"""Child processes the event loop hands work to through pipes (DKIM signing, delivery,
the SQLite queue's writer).

Why processes: work done in the relay's own process holds the GIL and runs on the event
loop's core, and SMTP accepts wait behind it. A child runs at a lower priority (nice), so
when both want a core the accepts go first; not the queue's writer, which accepts wait
for. Why pipes and not ``ProcessPoolExecutor``: its manager thread needs the relay's GIL
to hand each job over (that capped signing at about 600 messages/s on a busy loop); here
the loop writes requests straight into the child's stdin and reads answers from its
stdout, requests pipelined and matched by id.

A frame (worker_frames.py) carries one pickle, with big values beside it. A child that
dies fails its requests with :class:`WorkerUnavailable` and is started again; what runs in
the child is in worker_child.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from mailgate.exceptions import MailgateError
from mailgate.logs import LOG_FORMAT_ENV, current_format
from mailgate.memory import TRIMMER
from mailgate.worker_frames import READY, FrameProtocol, GatheredFrames, write_frame

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # s for a child to import and load its configuration
STOP_TIMEOUT = 10.0  # s for a child to finish after end of file, before SIGKILL


# What waits for a request's answer: an awaited future (call), or a callback (submit).
OnAnswer = Callable[[bool, Any], None]
Waiter = asyncio.Future[Any] | OnAnswer
Pending = dict[int, Waiter]
# A child started by prestart(): its process, the protocol reading its stdout, and the
# future done when that closes.
_Spawned = tuple[asyncio.subprocess.Process, FrameProtocol, asyncio.Future[None]]


class WorkerUnavailable(MailgateError):
    """The child process died (or was never running) before answering."""


class ChildProcess:
    """One child running ``python -m module``: frames out through :meth:`send`, frames back
    to ``on_message``; started again when it dies, unless it is being closed.

    ``gather``: the frames sent in one turn of the event loop go out together at its end
    (worker_frames.GatheredFrames): the delivery process gets a frame per message, and a
    claim starts its messages' attempts in the same turn."""

    def __init__(
        self,
        module: str,
        hello: object,
        *,
        what: str,
        on_message: Callable[[Any], None],
        on_exit: Callable[[], None] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
        gather: bool = False,
    ) -> None:
        self._module = module
        self._hello = hello
        self.what = what  # "DKIM signing process", for the log
        self._on_message = on_message
        self._on_exit = on_exit
        self._stop_timeout = stop_timeout
        self._gather = gather
        self._out: GatheredFrames | None = None  # the running child's, with gather
        self._proc: asyncio.subprocess.Process | None = None
        # Done when the child's stdout is closed; None until the child is ready.
        self._reader: asyncio.Future[None] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._closing = False
        self._early: _Spawned | None = None  # spawned by prestart(), not yet greeted

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._reader is not None and self._proc is not None and self._proc.returncode is None

    def set_hello(self, hello: object) -> None:
        """What start() sends the child first, when it was not known at construction
        (prestart())."""
        self._hello = hello

    async def prestart(self) -> None:
        """Start the child's process now and greet it later (start()): it loads its
        modules meanwhile, while the relay opens its store, and then waits for the hello."""
        if self._early is None:
            self._early = await self._spawn()

    async def _spawn(self) -> _Spawned:
        loop = asyncio.get_running_loop()
        # The child's stdout is a pipe of our own, read by a FrameProtocol (worker_frames).
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self._module,
                stdin=asyncio.subprocess.PIPE,
                stdout=write_end,
                env={**os.environ, LOG_FORMAT_ENV: current_format()},  # the relay's log format
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        eof: asyncio.Future[None] = loop.create_future()
        _, frames = await loop.connect_read_pipe(
            lambda: FrameProtocol(self._answered, lambda: self._stdout_closed(proc, eof)),
            open(read_end, "rb", buffering=0),  # noqa: SIM115 - the transport closes it
        )
        return proc, frames, eof

    async def start(self) -> None:
        """Start the child (or greet the one prestart() began) and wait until it is ready
        (or raise WorkerUnavailable)."""
        spawned, self._early = self._early, None
        proc, frames, eof = spawned if spawned is not None else await self._spawn()
        assert proc.stdin is not None
        write_frame(proc.stdin, self._hello)
        try:
            ready = await asyncio.wait_for(asyncio.shield(frames.ready), START_TIMEOUT)
        except (ConnectionError, TimeoutError):
            frames.ready.cancel()  # not waited for any more
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            await eof
            raise WorkerUnavailable(f"a {self.what} did not start") from None
        if READY.unpack(ready)[0] != 0:
            raise WorkerUnavailable(f"a {self.what} said something unexpected")
        self._attach(proc, eof)

    def _attach(self, proc: asyncio.subprocess.Process, eof: asyncio.Future[None]) -> None:
        """``proc`` is ready: requests go to it from now on. Frames gathered for a child
        gone meanwhile are dropped: its requests failed as it went (_stdout_closed), and a
        child started since must not attempt them."""
        self._proc = proc
        self._reader = eof
        if self._gather:
            self._out = GatheredFrames(proc.stdin, lambda: self._proc is proc and self.alive)

    async def ready(self) -> bool:
        """Is the child running, once a restart under way has finished? A child whose exit
        was seen before the end of its output was read is waited for too: its restart
        begins when that end is read (_stdout_closed). Without that wait, requests in the
        gap failed with "no ... process is running" (deferred by a whole retry backoff)."""
        eof = self._reader
        if eof is not None and not eof.done() and not self.alive:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(eof), START_TIMEOUT)
        if not self.alive and self._restart is not None and not self._restart.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._restart), START_TIMEOUT)
        return self.alive

    def send(self, obj: object) -> None:
        if not self.alive:
            raise WorkerUnavailable(f"the {self.what} is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            if self._out is not None:
                self._out.send(obj)
            else:
                TRIMMER.note(write_frame(self._proc.stdin, obj))
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerUnavailable(str(exc)) from None

    def _answered(self, message: Any, size: int) -> None:
        self._on_message(message)
        TRIMMER.note(size)

    def _stdout_closed(self, proc: asyncio.subprocess.Process, eof: asyncio.Future[None]) -> None:
        """The child exited (or closed its stdout): its requests fail, and another starts."""
        eof.set_result(None)
        if self._reader is not eof:
            return  # it never became ready: start() says so
        self._reader = None
        if self._on_exit is not None:
            self._on_exit()
        if not self._closing:
            # Set before anything else runs, so requests from now on wait for the new child
            # (ready()) instead of failing while the old one is being reaped.
            self._restart = asyncio.create_task(self._start_again(proc))

    async def _start_again(self, dead: asyncio.subprocess.Process) -> None:
        code = await dead.wait()
        log.error("a %s exited (code %s); starting another", self.what, code)
        try:
            await self.start()
        except (WorkerUnavailable, OSError) as exc:
            log.error("could not start a %s: %s", self.what, exc)

    async def close(self) -> None:
        """End of file on the child's stdin, then wait for it to finish (SIGKILL after the
        stop timeout)."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        early, self._early = self._early, None
        if early is not None:  # prestarted, never greeted: end of file, and it exits
            proc, frames, eof = early
            frames.ready.cancel()  # nobody waits for it
            await self._end(proc, eof)
        proc = self._proc
        if proc is None:
            return
        if self._out is not None:
            self._out.flush()  # what was sent before the close, then end of file
        await self._end(proc, self._reader)

    async def _end(
        self, proc: asyncio.subprocess.Process, eof: asyncio.Future[None] | None
    ) -> None:
        """End of file on ``proc``'s stdin, then wait for it to exit (SIGKILL after the
        stop timeout) and for its stdout to close."""
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), self._stop_timeout)
        except TimeoutError:
            log.error("the %s did not stop in %.0f s; killing it", self.what, self._stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if eof is not None:
            await eof


class WorkerPool:
    """``count`` children answering requests; each request goes to the least busy one."""

    def __init__(
        self,
        module: str,
        hello: object,
        count: int,
        *,
        what: str,
        stop_timeout: float = STOP_TIMEOUT,
        gather: bool = False,
    ) -> None:
        """``gather``: see ChildProcess."""
        self._module = module
        self._count = count
        self._what = what
        self._stop_timeout = stop_timeout
        self._gather = gather
        self._children = self._make(hello)
        self._ids = itertools.count()
        self._retiring: set[asyncio.Task[None]] = set()

    def _make(self, hello: object) -> list[tuple[ChildProcess, Pending]]:
        children = []
        for _ in range(self._count):
            pending: Pending = {}
            child = ChildProcess(
                self._module,
                hello,
                what=self._what,
                on_message=lambda msg, p=pending: self._answered(p, msg),
                on_exit=lambda p=pending, w=self._what: self._died(p, w),
                stop_timeout=self._stop_timeout,
                gather=self._gather,
            )
            children.append((child, pending))
        return children

    async def prestart(self) -> None:
        """Start the children's processes now, to greet them later (ChildProcess.prestart)."""
        await asyncio.gather(*(child.prestart() for child, _ in self._children))

    def set_hello(self, hello: object) -> None:
        """What start() greets the children with, when it was not known at construction."""
        for child, _ in self._children:
            child.set_hello(hello)

    async def start(self) -> None:
        """Start the children and wait until each is ready (or raise WorkerUnavailable)."""
        await asyncio.gather(*(child.start() for child, _ in self._children))

    async def replace(self, hello: object, *, stop_timeout: float | None = None) -> None:
        """Start new children with ``hello`` (a reload's settings) and send every request
        from now on to them; the old ones answer what they were given, then stop. Raises
        WorkerUnavailable, and the old children stay, if the new ones do not start."""
        if stop_timeout is not None:
            self._stop_timeout = stop_timeout
        new = self._make(hello)
        try:
            await asyncio.gather(*(child.start() for child, _ in new))
        except BaseException:
            await asyncio.gather(*(child.close() for child, _ in new), return_exceptions=True)
            raise
        old, self._children = self._children, new
        task = asyncio.create_task(self._retire(old), name=f"mailgate-retire-{self._module}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(old: list[tuple[ChildProcess, Pending]]) -> None:
        """Wait for the old children's answers (or their callers giving up), then stop them
        (callbacks of submit() get theirs as they come, or WorkerUnavailable at the stop)."""
        waiting = [
            f for _, pending in old for f in pending.values() if isinstance(f, asyncio.Future)
        ]
        try:
            if waiting:
                await asyncio.wait(waiting)
        finally:  # also when close() stops waiting
            await asyncio.gather(*(child.close() for child, _ in old), return_exceptions=True)

    async def call(self, request: object) -> Any:
        """The child's answer to ``request``; raises what it raised (as RuntimeError)."""
        alive = [(c, p) for c, p in self._children if c.alive]
        if not alive:  # all died: wait for one to start again rather than fail at once
            ready = await asyncio.gather(*(c.ready() for c, _ in self._children))
            alive = [cp for cp, ok in zip(self._children, ready, strict=True) if ok]
        if not alive:
            raise WorkerUnavailable(f"no {self._what} is running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(alive, request, future)
        return await future

    def submit(self, request: object, on_answer: OnAnswer) -> None:
        """:meth:`call` with a callback, called from the I/O callback that reads the answer:
        ``on_answer(True, answer)``, or ``on_answer(False, exception)`` (what the child
        raised, as RuntimeError, or WorkerUnavailable if it died). An awaiting task would
        get it a loop iteration later. Raises WorkerUnavailable if no child is running."""
        alive = [(c, p) for c, p in self._children if c.alive]
        if not alive:
            raise WorkerUnavailable(f"no {self._what} is running")
        self._send(alive, request, on_answer)

    def _send(self, alive: list[tuple[ChildProcess, Pending]], request: object, to: Waiter) -> None:
        child, pending = min(alive, key=lambda cp: len(cp[1]))
        rid = next(self._ids)
        child.send((rid, request))
        pending[rid] = to

    @staticmethod
    def _answered(pending: Pending, msg: tuple[int, bool, Any]) -> None:
        rid, ok, payload = msg
        waiter = pending.pop(rid, None)
        if waiter is None:
            return
        if not isinstance(waiter, asyncio.Future):
            waiter(ok, payload if ok else RuntimeError(payload))
        elif waiter.done():
            return
        elif ok:
            waiter.set_result(payload)
        else:
            waiter.set_exception(RuntimeError(payload))

    @staticmethod
    def _died(pending: Pending, what: str) -> None:
        waiters = list(pending.values())
        pending.clear()
        for waiter in waiters:
            if not isinstance(waiter, asyncio.Future):
                waiter(False, WorkerUnavailable(f"the {what} died"))
            elif not waiter.done():
                waiter.set_exception(WorkerUnavailable(f"the {what} died"))

    async def close(self) -> None:
        """Stop the children (they answer what they were given first), and the ones a
        replace() is retiring, once their callers have their answers or gave up."""
        await asyncio.gather(*(child.close() for child, _ in self._children))
        if self._retiring:
            _, late = await asyncio.wait(set(self._retiring), timeout=self._stop_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def pids(self) -> list[int]:
        return [c.pid for c, _ in self._children if c.pid is not None]

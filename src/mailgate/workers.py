"""Child processes the event loop hands work to through pipes (DKIM signing, delivery,
the SQLite queue's writer).

Why processes: work done in the relay's own process holds the GIL and runs on the event
loop's core, and SMTP accepts wait behind it. A child runs at a lower priority (nice), so
when both want a core the accepts go first; not the queue's writer, which accepts wait
for. Why pipes and not ``ProcessPoolExecutor``: its manager thread needs the relay's GIL
to hand each job over (that capped signing at about 600 messages/s on a busy loop); here
the loop writes requests straight into the child's stdin and reads answers from its
stdout, requests pipelined and matched by id.

A frame is a header (the pickle's length, how many out-of-band buffers follow and their
lengths), a pickle (protocol 5), then those buffers: the values a sender wraps in
``pickle.PickleBuffer`` (a big message body) travel beside the pickle instead of inside
it, so neither side makes a copy of them to pickle or unpickle. A child first reads one
"hello" frame (its configuration), answers with four zero bytes when it is ready, then
serves requests until end of file on its stdin: nobody else holds that pipe open, so a
child exits by itself when the relay stops or dies (even by SIGKILL). A child that dies
fails its requests with :class:`WorkerUnavailable` and is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from mailgate.exceptions import MailgateError
from mailgate.logs import LOG_FORMAT_ENV, current_format
from mailgate.memory import TRIMMER, tune_allocator

log = logging.getLogger(__name__)

_LEN = struct.Struct("!I")  # the ready signal
_HEAD = struct.Struct("!II")  # pickle length, number of out-of-band buffers
_BUF = struct.Struct("!Q")  # an out-of-band buffer's length
START_TIMEOUT = 30.0  # s for a child to import and load its configuration
STOP_TIMEOUT = 10.0  # s for a child to finish after end of file, before SIGKILL
# The children's priority, below the relay's listeners (0): when both want a core, accepts
# go first; a child still gets about a third of a contended core, so delivery goes on.
NICE = 5


class WorkerUnavailable(MailgateError):
    """The child process died (or was never running) before answering."""


def frame(obj: object) -> list[Any]:
    """The parts of ``obj``'s frame, to be written one after the other (joined, a big
    body would be copied once more)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = _HEAD.pack(len(data), len(views)) + b"".join(_BUF.pack(v.nbytes) for v in views)
    return [head, data, *views]


def _write(out: Any, obj: object) -> int:
    """Write ``obj``'s frame to a stream or transport; its size."""
    size = 0
    for part in frame(obj):
        out.write(part)
        size += len(part) if isinstance(part, bytes) else part.nbytes
    return size


async def _read_async(stream: asyncio.StreamReader) -> tuple[Any, int]:
    """The next frame's object and size from ``stream``."""
    size, count = _HEAD.unpack(await stream.readexactly(_HEAD.size))
    lengths = [_BUF.unpack_from(await stream.readexactly(_BUF.size))[0] for _ in range(count)]
    data = await stream.readexactly(size)
    buffers = [await stream.readexactly(n) for n in lengths]
    return pickle.loads(data, buffers=buffers), size + sum(lengths)


class ChildProcess:
    """One child running ``python -m module``: frames out through :meth:`send`, frames back
    to ``on_message``; started again when it dies, unless it is being closed."""

    def __init__(
        self,
        module: str,
        hello: object,
        *,
        what: str,
        on_message: Callable[[Any], None],
        on_exit: Callable[[], None] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._module = module
        self._hello = hello
        self.what = what  # "DKIM signing process", for the log
        self._on_message = on_message
        self._on_exit = on_exit
        self._stop_timeout = stop_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._reader is not None and self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the child and wait until it is ready (or raise WorkerUnavailable)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
            env={**os.environ, LOG_FORMAT_ENV: current_format()},  # the relay's log format
        )
        assert proc.stdin is not None and proc.stdout is not None
        _write(proc.stdin, self._hello)
        try:
            ready = await asyncio.wait_for(proc.stdout.readexactly(_LEN.size), START_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise WorkerUnavailable(f"a {self.what} did not start") from None
        if _LEN.unpack(ready)[0] != 0:
            raise WorkerUnavailable(f"a {self.what} said something unexpected")
        self._proc = proc
        self._reader = asyncio.create_task(self._read(proc), name=f"mailgate-{self._module}")

    async def ready(self) -> bool:
        """Is the child running, once a restart under way has finished?"""
        if not self.alive and self._restart is not None and not self._restart.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._restart), START_TIMEOUT)
        return self.alive

    def send(self, obj: object) -> None:
        if not self.alive:
            raise WorkerUnavailable(f"the {self.what} is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            TRIMMER.note(_write(self._proc.stdin, obj))
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerUnavailable(str(exc)) from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        stdout = proc.stdout
        assert stdout is not None
        try:
            while True:
                message, size = await _read_async(stdout)
                self._on_message(message)
                del message
                TRIMMER.note(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child exited
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
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), self._stop_timeout)
        except TimeoutError:
            log.error("the %s did not stop in %.0f s; killing it", self.what, self._stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


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
    ) -> None:
        self._module = module
        self._count = count
        self._what = what
        self._stop_timeout = stop_timeout
        self._children = self._make(hello)
        self._ids = itertools.count()
        self._retiring: set[asyncio.Task[None]] = set()

    def _make(self, hello: object) -> list[tuple[ChildProcess, dict[int, asyncio.Future[Any]]]]:
        children = []
        for _ in range(self._count):
            pending: dict[int, asyncio.Future[Any]] = {}
            child = ChildProcess(
                self._module,
                hello,
                what=self._what,
                on_message=lambda msg, p=pending: self._answered(p, msg),
                on_exit=lambda p=pending, w=self._what: self._died(p, w),
                stop_timeout=self._stop_timeout,
            )
            children.append((child, pending))
        return children

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
    async def _retire(old: list[tuple[ChildProcess, dict[int, asyncio.Future[Any]]]]) -> None:
        """Wait for the old children's answers (or their callers giving up), then stop them."""
        waiting = [f for _, pending in old for f in pending.values()]
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
        child, pending = min(alive, key=lambda cp: len(cp[1]))
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.send((rid, request))
        pending[rid] = future
        return await future

    @staticmethod
    def _answered(pending: dict[int, asyncio.Future[Any]], msg: tuple[int, bool, Any]) -> None:
        rid, ok, payload = msg
        future = pending.pop(rid, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(payload)
        else:
            future.set_exception(RuntimeError(payload))

    @staticmethod
    def _died(pending: dict[int, asyncio.Future[Any]], what: str) -> None:
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerUnavailable(f"the {what} died"))
        pending.clear()

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


# ---- the child's side


def child_setup(*, nice: bool = True) -> None:
    """Background work beside the relay's event loop: when both want a core, the loop goes
    first (unless not ``nice``: the queue's writer, which accepts wait for). Ctrl-C in a
    terminal and systemd's SIGTERM reach the whole process group: the relay stops in order
    and closes our stdin, and we exit then, after the work it still needs, so those signals
    are ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_allocator()
    if not nice:
        return
    with contextlib.suppress(OSError):  # a sandbox may refuse; the work gets done regardless
        # Absolute, not relative: a signing process started by the delivery process gets
        # the same priority as its parent, not lower again.
        os.setpriority(os.PRIO_PROCESS, 0, max(NICE, os.getpriority(os.PRIO_PROCESS, 0)))


def _read_exactly(inp: BinaryIO, size: int) -> bytes:
    data = inp.read(size)
    if len(data) < size:
        raise EOFError
    return data


def _read_frame(inp: BinaryIO) -> tuple[Any, int]:
    """The next frame's object and size; EOFError at end of file."""
    size, count = _HEAD.unpack(_read_exactly(inp, _HEAD.size))
    lengths = [_BUF.unpack(_read_exactly(inp, _BUF.size))[0] for _ in range(count)]
    data = _read_exactly(inp, size)
    buffers = [_read_exactly(inp, n) for n in lengths]
    return pickle.loads(data, buffers=buffers), size + sum(lengths)


def failure(exc: BaseException) -> str:
    """An exception as the text a failed answer carries (the relay raises it as RuntimeError)."""
    return f"{type(exc).__name__}: {exc}"


def serve_blocking(setup: Callable[[Any], Callable[[Any], object]]) -> None:
    """Serve one request at a time: ``setup(hello)`` returns the handler for requests."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    handle = setup(_read_frame(inp)[0])
    out.write(_LEN.pack(0))  # ready
    out.flush()
    while True:
        try:
            (rid, request), size = _read_frame(inp)
        except EOFError:
            return  # the relay stopped or died
        try:
            answer: tuple[int, bool, object] = (rid, True, handle(request))
        except Exception as exc:
            answer = (rid, False, failure(exc))
        del request
        size = max(size, _write(out, answer))
        del answer
        out.flush()
        TRIMMER.note(size)


Setup = Callable[
    [Any, Callable[[object], None]],
    Awaitable[tuple[Callable[[Any], None], Callable[[], Awaitable[None]]]],
]


async def exchange_messages(setup: Setup) -> None:
    """Run a child that trades one-way messages with the relay on an event loop.

    ``setup(hello, send)`` returns the function each message from the relay goes to and a
    close function; ``send`` writes a message to the relay. At end of file (the relay
    stopped or died) close is awaited, then this returns.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    def send(obj: object) -> None:
        if not transport.is_closing():
            TRIMMER.note(_write(writer, obj))

    async def next_frame() -> Any:
        obj, size = await _read_async(reader)
        TRIMMER.note(size)
        return obj

    on_message, close = await setup(await next_frame(), send)
    try:
        if transport.is_closing():
            raise ConnectionError("the relay is gone")
        writer.write(_LEN.pack(0))  # ready
        while True:
            on_message(await next_frame())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # end of file: the relay stopped or died
    await close()
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def answer_each(
    handle: Callable[[Any], Awaitable[Any]],
    send: Callable[[object], None],
    *,
    name: Callable[[Any], str],
    finish: Callable[[], Awaitable[None]],
) -> tuple[Callable[[Any], None], Callable[[], Awaitable[None]]]:
    """For :func:`exchange_messages`: each request handled in a task of its own and
    answered when done (an exception as a failed answer, logged with ``name(request)``);
    close cancels what is still running, then awaits ``finish``."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(rid: int, request: Any) -> None:
        try:
            answer = (rid, True, await handle(request))
        except Exception as exc:
            log.exception("%s failed", name(request))
            answer = (rid, False, failure(exc))
        send(answer)

    def on_message(message: tuple[int, Any]) -> None:
        task = asyncio.create_task(run(*message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def close() -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await finish()

    return on_message, close


def run_child(setup: Setup) -> None:
    """The ``main`` of a child that trades messages on an event loop (uvloop if there)."""
    child_setup()
    try:
        import uvloop
    except ImportError:
        asyncio.run(exchange_messages(setup))
    else:
        uvloop.run(exchange_messages(setup))

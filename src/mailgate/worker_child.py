"""The child's side of the pipes to the relay (workers.py has the relay's): setup, and
the two ways a child serves, one request at a time or messages on an event loop.

A child first reads one "hello" frame (its configuration), answers with four zero bytes
when it is ready, then serves requests until end of file on its stdin: nobody else holds
that pipe open, so a child exits by itself when the relay stops or dies (even by SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from mailgate.memory import TRIMMER, tune_allocator
from mailgate.worker_frames import (
    READY,
    GatheredFrames,
    read_frame,
    read_frame_async,
    write_frame,
)

# The children's log lines keep the logger name they always had.
log = logging.getLogger("mailgate.workers")

# The children's priority, below the relay's listeners (0): when both want a core, accepts
# go first; a child still gets about a third of a contended core, so delivery goes on.
NICE = 5


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


def failure(exc: BaseException) -> str:
    """An exception as the text a failed answer carries (the relay raises it as RuntimeError)."""
    return f"{type(exc).__name__}: {exc}"


def serve_blocking(setup: Callable[[Any], Callable[[Any], object]]) -> None:
    """Serve one request at a time: ``setup(hello)`` returns the handler for requests."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        hello = read_frame(inp)[0]
    except EOFError:
        return  # the relay went away before greeting us (a start that failed)
    handle = setup(hello)
    out.write(READY.pack(0))  # ready
    out.flush()
    while True:
        try:
            (rid, request), size = read_frame(inp)
        except EOFError:
            return  # the relay stopped or died
        try:
            answer: tuple[int, bool, object] = (rid, True, handle(request))
        except Exception as exc:
            answer = (rid, False, failure(exc))
        del request
        try:
            size = max(size, write_frame(out, answer))
            del answer
            out.flush()
        except BrokenPipeError:
            _relay_gone()
            return
        TRIMMER.note(size)


def _relay_gone() -> None:
    """The relay died (its end of our stdout is closed): exit quietly, without the
    interpreter's "Exception ignored" when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
    # The answers of one turn of the loop go out together at its end (worker_frames).
    out = GatheredFrames(writer, lambda: not transport.is_closing())

    def send(obj: object) -> None:
        if not transport.is_closing():
            out.send(obj)

    async def next_frame() -> Any:
        obj, size = await read_frame_async(reader)
        TRIMMER.note(size)
        return obj

    try:
        hello = await next_frame()
    except asyncio.IncompleteReadError:
        return  # the relay went away before greeting us (a start that failed)
    on_message, close = await setup(hello, send)
    try:
        if transport.is_closing():
            raise ConnectionError("the relay is gone")
        writer.write(READY.pack(0))  # ready
        while True:
            on_message(await next_frame())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # end of file: the relay stopped or died
    await close()
    out.flush()
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

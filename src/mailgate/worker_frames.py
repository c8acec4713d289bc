"""The frames relay and children trade over the pipes (both sides; workers.py is the
relay's, worker_child.py the child's).

A frame is a header (the pickle's length, how many out-of-band buffers follow and their
lengths), a pickle (protocol 5), then those buffers: the values a sender wraps in
``pickle.PickleBuffer`` (a big message body) travel beside the pickle instead of inside
it, so neither side makes a copy of them to pickle or unpickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from mailgate.memory import TRIMMER

log = logging.getLogger("mailgate.workers")

READY = struct.Struct("!I")  # the ready signal: four zero bytes
HEAD = struct.Struct("!II")  # pickle length, number of out-of-band buffers
BUF = struct.Struct("!Q")  # an out-of-band buffer's length


def frame(obj: object) -> list[Any]:
    """The parts of ``obj``'s frame, to be written one after the other (joined, a big
    body would be copied once more)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = HEAD.pack(len(data), len(views)) + b"".join(BUF.pack(v.nbytes) for v in views)
    return [head, data, *views]


def write_frame(out: Any, obj: object) -> int:
    """Write ``obj``'s frame to a stream or transport; its size.

    The header and the pickle in one ``writelines``: on an event loop's pipe (uvloop)
    one ``writev``, where a write each made two system calls and woke the reader for the
    header alone (held SMTP accepts about 2 % faster). The out-of-band buffers (big
    bodies) are written one by one: uvloop's writelines copies what the pipe cannot take
    at once, and a 12 MB body would be held twice.
    """
    return write_parts(out, frame(obj))


def write_parts(out: Any, parts: list[Any]) -> int:
    """Write a frame's parts (:func:`frame`) as :func:`write_frame` says; its size."""
    head, data, *views = parts
    out.writelines((head, data))
    for view in views:
        out.write(view)
    return len(head) + len(data) + sum(view.nbytes for view in views)


class GatheredFrames:
    """Frames to ``out`` (a stream or transport) sent in one turn of the event loop,
    written together at its end in one ``writelines`` instead of a write each; a frame
    with a big body beside its pickle is written at once, after what waits, so the order
    holds and the body is not joined. At the end of the turn what waits is written only
    if ``usable()`` still says so (the child it was for may be gone), else dropped.

    The relay sends the delivery process a frame per message, and a claim starts its
    messages' attempts in the same turn; each child answered every request in a write of
    its own too: each write woke the other side."""

    def __init__(self, out: Any, usable: Callable[[], bool]) -> None:
        self._out = out
        self._usable = usable
        self._parts: list[Any] = []

    def send(self, obj: object) -> None:
        parts = frame(obj)
        if len(parts) > 2:
            self.flush()
            TRIMMER.note(write_parts(self._out, parts))
            return
        if not self._parts:
            asyncio.get_running_loop().call_soon(self.flush)
        self._parts += parts

    def flush(self) -> None:
        """Write what waits now (before a close, say)."""
        parts, self._parts = self._parts, []
        if not parts or not self._usable():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._out.writelines(parts)
            TRIMMER.note(sum(len(p) for p in parts))


async def read_frame_async(stream: asyncio.StreamReader) -> tuple[Any, int]:
    """The next frame's object and size from ``stream``."""
    size, count = HEAD.unpack(await stream.readexactly(HEAD.size))
    lengths = [BUF.unpack_from(await stream.readexactly(BUF.size))[0] for _ in range(count)]
    data = await stream.readexactly(size)
    buffers = [await stream.readexactly(n) for n in lengths]
    return pickle.loads(data, buffers=buffers), size + sum(lengths)


def _read_exactly(inp: BinaryIO, size: int) -> bytes:
    data = inp.read(size)
    if len(data) < size:
        raise EOFError
    return data


def read_frame(inp: BinaryIO) -> tuple[Any, int]:
    """The next frame's object and size; EOFError at end of file."""
    size, count = HEAD.unpack(_read_exactly(inp, HEAD.size))
    lengths = [BUF.unpack(_read_exactly(inp, BUF.size))[0] for _ in range(count)]
    data = _read_exactly(inp, size)
    buffers = [_read_exactly(inp, n) for n in lengths]
    return pickle.loads(data, buffers=buffers), size + sum(lengths)


class FrameProtocol(asyncio.Protocol):
    """A child's stdout, read by the relay: the ready signal, then frames, each handed to
    ``on_frame(obj, size)`` from the I/O callback itself. A reader task (StreamReader,
    read_frame_async) got each answer a loop iteration later, and under load an
    iteration of the relay's loop is a millisecond or more: every commit waited for it.
    ``on_eof`` is called once the pipe is closed (the child exited)."""

    def __init__(self, on_frame: Callable[[Any, int], None], on_eof: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_eof = on_eof
        self._buf = bytearray()
        self._need = HEAD.size  # bytes the next frame needs, as far as known
        self._transport: asyncio.BaseTransport | None = None
        self.ready: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.ready.done():
            if len(buf) < READY.size:
                return
            self.ready.set_result(bytes(buf[: READY.size]))
            del buf[: READY.size]
        if len(buf) < self._need:
            return  # a big frame still arriving: not parsed again for every piece
        pos = 0
        try:
            while True:
                parsed = self._frame_at(pos)
                if parsed is None:
                    break
                obj, size, pos = parsed
                self._on_frame(obj, size)
                del obj
        except Exception:  # a bug here or in on_frame: the stream cannot be trusted
            log.exception("reading a child's answers failed; stopping it")
            if self._transport is not None:
                self._transport.close()
        del buf[:pos]

    def _frame_at(self, pos: int) -> tuple[Any, int, int] | None:
        """The frame at ``pos`` in the buffer, its size and where the next one starts; None
        if it has not all arrived (then ``_need`` says how much it needs)."""
        buf = self._buf
        have = len(buf) - pos
        self._need = HEAD.size
        if have < HEAD.size:
            return None
        size, count = HEAD.unpack_from(buf, pos)
        start = pos + HEAD.size + BUF.size * count
        if len(buf) < start:
            self._need = start - pos
            return None
        lengths = [BUF.unpack_from(buf, pos + HEAD.size + BUF.size * i)[0] for i in range(count)]
        end = start + size + sum(lengths)
        if len(buf) < end:
            self._need = end - pos
            return None
        data = bytes(buf[start : start + size])
        buffers = []
        at = start + size
        for n in lengths:
            buffers.append(bytes(buf[at : at + n]))
            at += n
        self._need = HEAD.size
        return pickle.loads(data, buffers=buffers), end - start, end

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the child closed its stdout"))
        self._on_eof()

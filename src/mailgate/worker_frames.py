"""The frames relay and children trade over the pipes (both sides; workers.py is the
relay's, worker_child.py the child's).

A frame is a header (the pickle's length, how many out-of-band buffers follow and their
lengths), a pickle (protocol 5), then those buffers: the values a sender wraps in
``pickle.PickleBuffer`` (a big message body) travel beside the pickle instead of inside
it, so neither side makes a copy of them to pickle or unpickle.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, BinaryIO

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
    head, data, *views = frame(obj)
    out.writelines((head, data))
    for view in views:
        out.write(view)
    return len(head) + len(data) + sum(view.nbytes for view in views)


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

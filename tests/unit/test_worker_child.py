"""A child serving one request at a time (worker_child.serve_blocking) whose relay died
with an answer still to write: it exits quietly, as at end of file, not with a
BrokenPipeError traceback in the relay's log."""

from __future__ import annotations

import subprocess
import sys

from mailgate.worker_frames import READY, write_frame

CHILD = (
    "from mailgate.worker_child import serve_blocking\n"
    "serve_blocking(lambda hello: (lambda request: b'x' * 100_000))\n"
)


def test_a_child_whose_relay_is_gone_exits_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    write_frame(proc.stdin, "hello")
    proc.stdin.flush()
    assert proc.stdout.read(READY.size) == READY.pack(0)
    proc.stdout.close()  # the relay is gone: nobody reads the answer
    write_frame(proc.stdin, (1, "request"))
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert proc.stderr.read() == b""

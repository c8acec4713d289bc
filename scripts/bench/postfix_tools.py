"""Postfix's own load tools for bench-postfix: finding them (and saying how to install them
when they are missing), ``smtp-source`` as the load and ``smtp-sink`` as the receiving end,
both children of the orchestrator with timeouts.

smtp-source sends a fixed number of messages over ``-s`` parallel sessions and exits; its
wall time is the accept time. smtp-sink with ``-c`` writes ``sess=.. quit=.. mesg=N`` (CR
separated) whenever a message's final "." arrives, flushed at once; reading that gives
the moment the sink has received a given count, without stopping it (``-M`` would exit on
the last "." before answering it, leaving that message deferred in the relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench import HOST, START_TIMEOUT
from bench.config import free_port
from bench.message import MessageFactory
from bench.processes import BenchError, Children

SENDER = "bench@example.com"  # the DKIM domain's sender, as bench-smtp's load uses
RECIPIENT = "rcpt@example.net"
INSTALL_HINT = (
    "Postfix's smtp-source, smtp-sink and master are needed (Debian package 'postfix').\n"
    "Install it without configuring a system mail server, and keep that one stopped:\n"
    "  echo 'postfix postfix/main_mailer_type select No configuration' "
    "| debconf-set-selections\n"
    "  DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n"
    "  postfix stop 2>/dev/null; systemctl disable postfix 2>/dev/null\n"
    "bench-postfix runs its own private instance on a loopback port, as root."
)
MAIL_OWNER = "postfix"  # Debian's package creates this user and the postdrop group
SETGID_GROUP = "postdrop"


class Missing(Exception):
    """Postfix (or root, which its master needs) is not there; the message says what."""


@dataclass(frozen=True)
class Tools:
    smtp_source: str
    smtp_sink: str
    postfix: str  # the command: ``postfix -c DIR check`` creates an instance's queue
    postconf: str
    master: str  # run directly, as ``postfix start-fg`` does, so it is our child


def find_tools() -> Tools:
    """Postfix's programs, or Missing with how to get them. /usr/sbin is searched even
    when it is not on PATH."""
    path = os.pathsep.join(filter(None, [os.environ.get("PATH"), "/usr/sbin", "/sbin"]))
    names = ("smtp-source", "smtp-sink", "postfix", "postconf")
    found = {name: shutil.which(name, path=path) for name in names}
    missing = sorted(name for name, where in found.items() if where is None)
    if missing:
        raise Missing(f"not found: {', '.join(missing)}\n{INSTALL_HINT}")
    master = Path("/usr/lib/postfix/sbin/master")  # Debian's daemon_directory
    if not master.exists():
        out = subprocess.run(
            [found["postconf"] or "postconf", "-h", "daemon_directory"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        master = Path(out.stdout.strip()) / "master"
    if not master.exists():
        raise Missing(f"Postfix's master daemon not found ({master})\n{INSTALL_HINT}")
    if os.geteuid() != 0:
        raise Missing("bench-postfix must run as root: Postfix's master starts as root")
    try:
        pwd.getpwnam(MAIL_OWNER)
    except KeyError:
        raise Missing(f"no user {MAIL_OWNER!r} (Postfix's mail_owner)\n{INSTALL_HINT}") from None
    return Tools(
        smtp_source=found["smtp-source"] or "",
        smtp_sink=found["smtp-sink"] or "",
        postfix=found["postfix"] or "",
        postconf=found["postconf"] or "",
        master=str(master),
    )


def write_message(path: Path, size: int) -> int:
    """bench-smtp's message of ``size`` bytes (2 KB: realistic text, From: example.com),
    as smtp-source -F wants it: LF line ends, no final dot (it adds CRLF and stuffing).
    Every message then carries the same Message-ID; neither relay minds. Its size on the
    wire, CRLF included, is returned."""
    factory = MessageFactory(size)
    raw = factory.make(0)
    assert raw.endswith(b"\r\n.\r\n")
    path.write_bytes(raw[:-3].replace(b"\r\n", b"\n"))
    return factory.size


async def run_source(
    children: Children,
    tools: Tools,
    port: int,
    *,
    message: Path,
    count: int,
    sessions: int,
    timeout: float,
    log: Path,
) -> float:
    """``smtp-source -d -s sessions -m count -F message`` against 127.0.0.1:port; its wall
    time in seconds. ``-d``: each session sends its messages over one connection, as
    bench-smtp's clients do. smtp-source aborts on any reply that is not the expected
    success; a non-zero exit (or the timeout) is a BenchError with what it said."""
    argv = [
        *(tools.smtp_source, "-d", "-s", str(sessions), "-m", str(count)),
        *("-F", str(message), "-f", SENDER, "-t", RECIPIENT, "-M", "bench.test"),
        f"{HOST}:{port}",
    ]
    with open(log, "ab") as fh:
        t0 = time.monotonic()
        proc = await children.spawn(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=fh, stderr=fh)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await children.stop(proc, 5)
            raise BenchError(
                f"smtp-source: {count} messages not sent within {timeout:.0f} s"
            ) from None
        took = time.monotonic() - t0
        await children.stop(proc, 5)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"smtp-source exited with {code}: " + " / ".join(tail))
    return took


_MESG = re.compile(rb"mesg=(\d+)\r")  # a whole update: each ends with CR


class SmtpSink:
    """A running ``smtp-sink -c``: the receiving end of the delivering rows. Its counter
    is read as it is written; ``wait_for(n)`` returns when n messages have arrived."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.count = 0
        self.at = 0.0  # time.monotonic() when ``count`` was last read
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, children: Children, tools: Tools, watch: Callable[[int], Awaitable[None]]
    ) -> SmtpSink:
        """On a free loopback port; as root it must drop to a user (-u), after binding.
        ``watch``: the guard's (that drop clears the parent-death signal)."""
        port = free_port()
        proc = await children.spawn(
            *(tools.smtp_sink, "-c", "-u", MAIL_OWNER, f"{HOST}:{port}", "1024"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        sink = cls(proc, port)
        await watch(proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.returncode is not None:
                raise BenchError(f"smtp-sink exited with {proc.returncode} on port {port}")
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                if time.monotonic() > deadline:
                    await sink.stop(children)
                    raise BenchError(f"smtp-sink is not accepting on port {port}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()  # one session in its counter: only "mesg=" is read
            return sink

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        tail = b""
        while chunk := await self.proc.stdout.read(1 << 16):
            tail = (tail + chunk)[-256:]
            found = _MESG.findall(tail)
            if found:
                self.count, self.at = int(found[-1]), time.monotonic()
                self._changed.set()
        self._changed.set()  # EOF: it exited; wait_for sees that

    async def wait_for(self, n: int, timeout: float) -> float:
        """Wait until ``n`` messages have arrived; time.monotonic() when that was read."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if self.proc.returncode is not None or self._reader.done():
                raise BenchError(f"smtp-sink exited after {self.count} of {n} messages")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"smtp-sink received {self.count} of {n} within {timeout:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.at

    async def stop(self, children: Children) -> None:
        await children.stop(self.proc, 5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # its pipe is gone
            await self._reader

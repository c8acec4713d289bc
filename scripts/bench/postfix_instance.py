"""A private Postfix instance for bench-postfix: its own config_directory, queue_directory
and data_directory under the bench's temp dir, an smtpd on a loopback port picked at run
time, and either every message put on hold (``check_client_access static:HOLD``: the
accept path alone, as far as the 250 after the queue file's fsync) or relayed to
``[127.0.0.1]:<sink port>`` (no DNS: an IP literal relayhost, native host lookups).

It changes nothing of the system's Postfix (/etc/postfix is only read by ``postfix -c DIR
check``, which creates the instance's queue directories). Its master daemon runs as the
bench's child, as ``postfix start-fg`` runs it (``master -s``, in the foreground), so the
kernel stops it with the bench even after a kill -9, and stop() ends it the way ``postfix
stop`` does (SIGTERM, which master passes on to its children; SIGKILL after 10 s), then
waits for every process it had started and removes the instance's directory.

Everything else is left at Postfix's defaults, as a new user's install would have it:
``default_destination_concurrency_limit`` 20 (the same as mailgate's max_connections
toward the sink in bench-smtp's relay.toml), connection caching toward the relayhost on
demand, ``default_process_limit`` 100 (enough for 50 smtpd sessions), syslog-style
logging (into ``maillog`` here: there is no syslog daemon to count on). Local delivery is
off (an empty mydestination, local_transport = error), and chroot is off in master.cf
(Debian's chroot needs files copied into the queue directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from bench import HOST, START_TIMEOUT
from bench.config import free_port
from bench.orchestrator import log_tail
from bench.postfix_guard import reap
from bench.postfix_tools import MAIL_OWNER, SETGID_GROUP, Tools
from bench.processes import BenchError, Children

STOP_TIMEOUT = 10.0
# Postfix 3.x's services, minus the pipe ones and the system smtpd: chroot off everywhere.
MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def main_cf(root: Path, sink_port: int | None) -> str:
    """main.cf: everything under ``root``; held (``sink_port`` None) or relaying."""
    lines = [
        "compatibility_level = 3.6",
        f"config_directory = {root / 'etc'}",
        f"queue_directory = {root / 'queue'}",
        f"data_directory = {root / 'data'}",
        f"mail_owner = {MAIL_OWNER}",
        f"setgid_group = {SETGID_GROUP}",
        "myhostname = postfix.bench.test",
        "mydomain = bench.test",
        "mydestination =",
        "local_transport = error:local delivery is disabled",
        "alias_maps =",
        "alias_database =",
        "inet_interfaces = loopback-only",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        "smtp_host_lookup = native",
        "smtp_dns_support_level = disabled",
        f"maillog_file = {root / 'maillog'}",
        f"maillog_file_prefixes = {root}",
    ]
    if sink_port is None:
        lines.append("smtpd_recipient_restrictions = check_client_access static:HOLD")
        lines.append("relayhost = [127.0.0.1]:9")  # never used: nothing leaves the hold queue
    else:
        lines.append(f"relayhost = [{HOST}]:{sink_port}")
    return "\n".join(lines) + "\n"


class PostfixInstance:
    """One private Postfix, started by start() and ended by stop() (call it in a finally)."""

    def __init__(
        self,
        children: Children,
        tools: Tools,
        root: Path,
        *,
        keep: bool,
        watch: Callable[[int], Awaitable[None]],
    ) -> None:
        self.children = children
        self.watch = watch  # the guard's: master outlives a kill -9 of the bench otherwise
        self.tools = tools
        self.root = root
        self.keep = keep  # --keep-tmp: leave its directory for a look at maillog
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._family: list[psutil.Process] = []

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    async def start(self, sink_port: int | None) -> int:
        """Write its configuration, create its queue, start master; its smtpd port."""
        root = self.root
        for sub in ("etc", "queue", "data"):
            (root / sub).mkdir(parents=True)
        os.chmod(root, 0o755)
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        self.port = free_port()
        (root / "etc" / "main.cf").write_text(main_cf(root, sink_port))
        (root / "etc" / "master.cf").write_text(MASTER_CF.format(host=HOST, port=self.port))
        await self._check()
        with open(root / "master.out", "wb") as fh:
            self.proc = await self.children.spawn(
                *(self.tools.master, "-c", str(root / "etc"), "-s"),
                stdin=asyncio.subprocess.DEVNULL, stdout=fh, stderr=fh,
            )  # fmt: skip
        await self.watch(self.proc.pid)
        await self._wait_accepting()
        return self.port

    async def _check(self) -> None:
        """``postfix -c DIR check``: creates the queue directories, checks the config."""
        proc = await self.children.spawn(
            *(self.tools.postfix, "-c", str(self.root / "etc"), "check"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            raise BenchError("postfix check: no answer within 60 s") from None
        finally:
            await self.children.stop(proc, 5)
        if proc.returncode != 0:
            raise BenchError(
                f"postfix -c {self.root / 'etc'} check exited with {proc.returncode}: "
                + out.decode(errors="replace").strip()
                + "\n"
                + log_tail(self.maillog, 10)
            )

    async def _wait_accepting(self) -> None:
        """Until its smtpd answers 220 (master listens at once; smtpd starts on demand)."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(OSError, TimeoutError):
                reader, writer = await asyncio.open_connection(HOST, self.port)
                try:
                    banner = await asyncio.wait_for(reader.readline(), 5)
                finally:
                    writer.close()
                if banner.startswith(b"220"):
                    self._note_family()
                    return
            await asyncio.sleep(0.1)
        code = self.proc.returncode
        state = "running" if code is None else f"exited with {code}"
        raise BenchError(
            f"Postfix is not answering on {HOST}:{self.port} (master {state}); "
            f"maillog:\n{log_tail(self.maillog, 15)}"
        )

    def _note_family(self) -> None:
        """Remember master's children now and then: they outlive it unless waited for."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            seen = {p.pid for p in self._family}
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if child.pid not in seen:
                    self._family.append(child)

    def held(self) -> int:
        """Queue files in the hold queue (one per message accepted with HOLD)."""
        return sum(len(files) for _, _, files in os.walk(self.root / "queue" / "hold"))

    def log_counts(self) -> dict[str, int]:
        """Per-recipient results in maillog: status=sent, deferred, bounced."""
        counts = {"sent": 0, "deferred": 0, "bounced": 0}
        with contextlib.suppress(OSError), open(self.maillog, errors="replace") as fh:
            for line in fh:
                for status in counts:
                    if f" status={status} " in line:
                        counts[status] += 1
        return counts

    async def stop(self) -> None:
        """SIGTERM to master (what ``postfix stop`` sends), wait for it and for every
        process it had started, SIGKILL what is left; remove its directory."""
        try:
            if self.proc is not None:
                self._note_family()
                await self.children.stop(self.proc, STOP_TIMEOUT)
                # Wait for every process master had started, SIGKILL what lingers.
                await asyncio.to_thread(reap, self._family, STOP_TIMEOUT)
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

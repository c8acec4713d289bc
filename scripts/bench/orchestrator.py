"""What every bench's orchestrator shares: the sink, starting and stopping ``mailgate
serve`` and short ``mailgate`` commands, the load client processes and their READY / GO /
RESULT exchange, the relay's log, and running the scenarios in a temp dir that is removed
(and every child stopped) however the run ends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench import HOST, START_TIMEOUT
from bench.processes import BenchError, Children, read_line

Probe = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Sink:
    """A running ``python -m bench.sink``: its ports, and its counts on request."""

    proc: asyncio.subprocess.Process
    port: int
    loop: str
    blackhole_port: int = 0

    async def _ask(self, command: bytes) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + b"\n")
        await self.proc.stdin.drain()
        return await read_line(self.proc, "sink", 10.0)

    async def count(self) -> int:
        return int((await self._ask(b"COUNT")).split()[1])

    async def stats(self) -> dict[str, Any]:
        """Arrival time per queue id, DKIM counts, a signed sample (tracking sinks only)."""
        line = await self._ask(b"STATS")
        if not line.startswith("STATS "):
            raise BenchError(f"sink said {line[:200]!r}")
        return dict(json.loads(line[len("STATS ") :]))


class MailgateProcess(Protocol):
    """A running ``mailgate serve`` (each bench has its own record of one)."""

    proc: asyncio.subprocess.Process
    log: Path


@dataclass
class ClientRun:
    """What one run of the load client processes said, and when its window was."""

    lines: list[str]  # their RESULT lines
    connected: int  # sessions connected before GO
    go: float  # time.time() when GO was sent
    start: float
    end: float
    edges: dict[str, Any]  # the probe at the window's start and end ({} without one)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def log_problems(path: Path) -> list[str]:
    """ERROR/CRITICAL/WARNING lines and tracebacks in mailgate's stderr, minus the
    expected 'delivery is disabled' warning."""
    out: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if "delivery is disabled" in line:
            continue
        if re.search(r" (ERROR|CRITICAL|WARNING) |^Traceback", line):
            out.append(line)
    return out


def parse_results(lines: Sequence[str], what: str) -> list[dict[str, Any]]:
    """The clients' RESULT payloads; anything else they said is a BenchError."""
    results = []
    for line in lines:
        if not line.startswith("RESULT "):
            raise BenchError(f"{what} said {line[:200]!r}")
        results.append(json.loads(line[len("RESULT ") :]))
    return results


class ChildrenBench:
    """The orchestrator's base: its child processes, the sink, mailgate, the clients."""

    def __init__(self, opts: argparse.Namespace, workdir: Path, client: str) -> None:
        self.opts = opts
        self.workdir = workdir
        self.children = Children()
        self.client = client  # the module of this bench's load client (python -m)
        self._runs = 0  # mailgate relays started: each gets its own folder

    def _log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    async def spawn_python(
        self, module: str, *args: str, **kwargs: Any
    ) -> asyncio.subprocess.Process:
        """``python -m module args``: mailgate's CLI, the sink, a load client, ..."""
        return await self.children.spawn(sys.executable, "-m", module, *args, **kwargs)

    # ---- mailgate

    def relay_dir(self) -> Path:
        """A new folder for the next relay (config, data, log): mailgate-1, -2, ..."""
        self._runs += 1
        workdir = self.workdir / f"mailgate-{self._runs}"
        workdir.mkdir()
        return workdir

    async def spawn_serve(self, config: Path, log: Path) -> asyncio.subprocess.Process:
        """``mailgate serve --config config``, its output into the file ``log`` (a file,
        not a pipe: a full pipe would stall mailgate)."""
        with open(log, "wb") as fh:
            return await self.spawn_python(
                "mailgate.cli", "serve", "--config", str(config),
                stdin=asyncio.subprocess.DEVNULL, stdout=fh, stderr=fh,
            )  # fmt: skip

    async def mailgate_cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run a short ``mailgate`` command; its stdout, or BenchError with its stderr."""
        proc = await self.spawn_python(
            "mailgate.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            await self.children.stop(proc, 5)
            raise BenchError(
                f"mailgate {' '.join(args[:2])}: no answer in {timeout:.0f} s"
            ) from None
        await self.children.stop(proc, 5)
        if proc.returncode != 0:
            raise BenchError(
                f"mailgate {' '.join(args[:2])} exited with {proc.returncode}: "
                + err.decode(errors="replace").strip()
            )
        return out.decode()

    async def create_key(self, config: Path) -> str:
        """An API key made by ``mailgate keys create`` for the relay of ``config``."""
        out = await self.mailgate_cli("keys", "create", "--name", "bench", "--config", str(config))
        lines = out.strip().splitlines()
        if not lines:
            raise BenchError("mailgate keys create printed no key")
        return lines[-1].strip()

    async def _wait_listening(
        self, proc: asyncio.subprocess.Process, log: Path, listener: str = "SMTP"
    ) -> int:
        """Parse '<listener> listening on 127.0.0.1:PORT' from mailgate's stderr."""
        deadline = time.monotonic() + START_TIMEOUT
        pattern = re.compile(re.escape(listener) + r" listening on 127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            m = pattern.search(log.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            if proc.returncode is not None:
                raise BenchError(
                    f"mailgate serve exited with code {proc.returncode}; stderr:\n" + log_tail(log)
                )
            await asyncio.sleep(0.05)
        raise BenchError("mailgate serve did not start listening; stderr:\n" + log_tail(log))

    async def _wait_connectable(
        self, proc: asyncio.subprocess.Process, log: Path, port: int
    ) -> int:
        """Wait until mailgate accepts connections on the port we chose for it."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise BenchError(
                    f"mailgate serve exited with code {proc.returncode}; stderr:\n" + log_tail(log)
                )
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return port
        raise BenchError(
            f"mailgate serve is not accepting on port {port}; stderr:\n" + log_tail(log)
        )

    async def stop_mailgate(self, mg: MailgateProcess) -> int:
        code = await self.children.stop(mg.proc, 40.0)
        if code != 0:
            self._log(f"mailgate exited with code {code}; stderr tail:\n{log_tail(mg.log)}")
        return code

    async def finish_mailgate(self, mg: MailgateProcess) -> tuple[int, list[str]]:
        """Stop mailgate: its exit code, and the warnings and errors of its log."""
        return await self.stop_mailgate(mg), log_problems(mg.log)

    # ---- sink

    async def start_sink(self, *, track: bool = False, blackhole: bool = False) -> Sink:
        """``track``: the lean sink of the delivering scenarios, offering CHUNKING unless
        ``--no-sink-chunking``."""
        no_chunking = not getattr(self.opts, "sink_chunking", True)
        flags = [
            f
            for f, on in (("track", track), ("blackhole", blackhole), ("nochunking", no_chunking))
            if on
        ]
        proc = await self.spawn_python(
            "bench.sink",
            *flags,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await read_line(proc, "sink", START_TIMEOUT)
        _, port, loop, hole_port = line.split()
        return Sink(proc, int(port), loop, int(hole_port))

    async def stop_sink(self, sink: Sink) -> None:
        if sink.proc.stdin is not None:
            sink.proc.stdin.close()  # EOF: the sink exits by itself
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.proc.wait(), 5)
        await self.children.stop(sink.proc, 5)

    # ---- load

    def _split(self, total: int) -> list[int]:
        procs = max(1, min(self.opts.client_procs, total))
        return [total // procs + (1 if i < total % procs else 0) for i in range(procs)]

    async def run_clients(
        self,
        argvs: Sequence[Sequence[str]],
        what: str,
        *,
        lead: float,
        length: float,
        go: Callable[[int], dict[str, Any]],
        probe: Probe | None = None,
        on_ready: Callable[[int], None] | None = None,
    ) -> ClientRun:
        """One load: a client process per ``argvs`` entry (the arguments after ``python
        -m self.client``); when all are READY, GO with a window from ``lead`` s after now
        lasting ``length`` s, plus ``go(i)`` for process i; ``probe`` sampled at the
        window's edges; their RESULT lines. The clients are stopped on any exit."""
        procs = [
            await self.spawn_python(
                self.client,
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for argv in argvs
        ]
        try:
            ready = [await read_line(p, what, START_TIMEOUT) for p in procs]
            connected = sum(int(line.split()[1]) for line in ready)
            now = time.time()
            start, end = now + lead, now + lead + length
            if on_ready is not None:
                on_ready(connected)
            for i, p in enumerate(procs):
                assert p.stdin is not None
                message = {"start": start, "end": end, **go(i)}
                p.stdin.write(b"GO " + json.dumps(message).encode() + b"\n")
                await p.stdin.drain()
            edges = await self._probe_edges(start, end, probe) if probe else {}
            lines = [await read_line(p, what, end - time.time() + 60) for p in procs]
        finally:
            for p in procs:
                await self.children.stop(p, 10.0)
        return ClientRun(lines, connected, now, start, end, edges)

    async def _probe_edges(self, start: float, end: float, probe: Probe) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start - time.time()))
        first = await probe()
        await asyncio.sleep(max(0.0, end - time.time()))
        last = await probe()
        return {"start": first, "end": last}


def select_scenarios(values: list[str] | None, known: Sequence[str]) -> list[str]:
    """--only a,b (repeatable) -> the known scenarios asked for, in their usual order."""
    if not values:
        return list(known)
    wanted = {v.strip() for value in values for v in value.split(",") if v.strip()}
    unknown = wanted - set(known)
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {sorted(unknown)}; pick from {known}")
    return [s for s in known if s in wanted]


def run_and_report(
    make_bench: Callable[[Path], Any],
    opts: argparse.Namespace,
    report: Callable[[list[Any]], None],
    *,
    prefix: str,
) -> int:
    """A bench's whole run: its scenarios in a temp dir, then ``report`` of their results.
    The exit code: 1 if a scenario failed, 130 / 143 when interrupted, else 0."""
    results = run_in_tempdir(make_bench, opts.scenarios, prefix=prefix, keep_tmp=opts.keep_tmp)
    if isinstance(results, int):
        return results
    report(results)
    return 1 if any(r.failed for r in results) else 0


def run_in_tempdir(
    make_bench: Callable[[Path], Any], scenarios: list[str], *, prefix: str, keep_tmp: bool
) -> list[Any] | int:
    """Run a bench's scenarios in a fresh temp dir: their results, or the exit code when
    interrupted (130 for Ctrl-C, 143 for SIGTERM). Children are stopped either way."""

    async def orchestrate(workdir: Path) -> list[Any]:
        bench = make_bench(workdir)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return list(await bench.run(scenarios))
        finally:
            try:
                await bench.children.stop_all()
            finally:
                bench.children.kill_all_now()

    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        return asyncio.run(orchestrate(Path(tmp)))
    except KeyboardInterrupt:
        print("\ninterrupted; child processes stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:  # SIGTERM cancels the orchestrator
        print("\nterminated; child processes stopped", file=sys.stderr)
        return 143
    finally:
        if keep_tmp:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

"""Builds everything from the settings; start and stop order; signals; sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO

from mailgate import collector, reload
from mailgate.accept import Acceptor
from mailgate.ballast import keep
from mailgate.config import Settings
from mailgate.delivery.bounce_intake import BounceIntake
from mailgate.delivery.outcome import AttemptRecord
from mailgate.delivery.process import DeliveryProcess
from mailgate.delivery.scheduler import Scheduler
from mailgate.events.attempts import FirstAttempts
from mailgate.events.metrics import Metrics
from mailgate.events.tokens import Signer, new_key
from mailgate.events.tracking import Tracking
from mailgate.events.webhooks import WebhookDispatcher
from mailgate.exceptions import ConfigError, MailgateError
from mailgate.inflight import InflightBudget
from mailgate.ingress.http import ApiContext, create_app
from mailgate.ingress.http_server import HttpServer
from mailgate.ingress.smtp_handler import SmtpHandler
from mailgate.ingress.smtp_listeners import SmtpListeners
from mailgate.ratelimit import RateLimiter
from mailgate.retention import Retention
from mailgate.space import FreeSpace, ballast_for, watched_path
from mailgate.store import Store
from mailgate.store.subject_index import SubjectIndexer
from mailgate.suppression import SuppressionList
from mailgate.workers import WorkerUnavailable

log = logging.getLogger(__name__)

# How long a thread of the relay's process may wait for the GIL while the event loop runs
# Python. pysqlite releases and re-takes the GIL around every row it reads or writes (the
# queue's reads run in aiosqlite threads; its writer, on SQLite, in a process of its own),
# and each re-take could wait the default 5 ms. A 30-row executemany next to a busy thread
# (0.2 ms alone) took 11.6 / 163 ms (p50 / p99) at 5 ms, 4.5 / 13 ms at 0.5 ms.
GIL_SWITCH_INTERVAL = 0.0005
HOUSEKEEPING_SECONDS = 60.0


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of systemd's WatchdogSec (WATCHDOG_USEC), when
    it is meant for this process (WATCHDOG_PID unset or ours); None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


async def ping_watchdog(interval: float) -> None:
    """WATCHDOG=1 from the event loop itself: a loop that stops turning stops the pings,
    and systemd restarts the relay (Restart=on-failure)."""
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


class AlreadyRunning(MailgateError):
    temporary = False


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.scheduler: Scheduler | None = None
        self.delivery: DeliveryProcess | None = None
        self._starting: asyncio.Task[None] | None = None
        self.smtp: SmtpListeners | None = None
        self.http: HttpServer | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._subjects: asyncio.Task[None] | None = None  # SQLite's subject index
        self._ballast: asyncio.Task[None] | None = None
        self.suppressions: SuppressionList | None = None
        self.acceptor: Acceptor | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.tracking: Tracking | None = None
        self._lock_file: IO[str] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()
        self.api: ApiContext | None = None
        node = settings.server.node_id
        self.owner = f"{node}:{os.getpid()}:{int(time.time())}"

    def _lock_data_dir(self) -> None:
        """One serving process per data_dir (and so per node id)."""
        data_dir = Path(self.settings.server.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        fh = open(reload.lock_path(self.settings), "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise AlreadyRunning(
                f"another mailgate serve is running with data_dir {data_dir.resolve()}"
            ) from exc
        fh.seek(0)
        fh.truncate()
        # The file a reload reads again (`mailgate reload --config` checks it is the same),
        # and that this serve answers a reload in reload.outcome_path (one of an earlier
        # release does not: the command must not wait for it).
        fh.write(f"{os.getpid()}\n{os.path.abspath(self.settings.source)}\nanswers\n")
        fh.flush()
        self._lock_file = fh

    async def start(self) -> None:
        s = self.settings
        self._lock_data_dir()
        interval = watchdog_interval()
        if interval is not None:  # from the start: opening the store may take a while
            self._watchdog = asyncio.create_task(ping_watchdog(interval), name="mailgate-watchdog")
        # Attempts run in a child process (mailgate.delivery.process). Its process starts
        # now and loads its modules while the store opens (its writer process starting
        # too); it is greeted with the settings and the tracking key once that is read.
        self.delivery = DeliveryProcess(s)
        if s.delivery.enabled:
            await self.delivery.prestart()
        # On SQLite the queue's writer runs in a process of its own (store/writer.py).
        self.store = await Store.open(s.database_url, writer_process=True)
        if not await self.store.claim_node(s.server.node_id):
            raise AlreadyRunning(
                f"another mailgate serve with [server] node_id {s.server.node_id!r} is running "
                "on this database: give each node its own node_id"
            )
        # Leases held by an earlier process of this node died with it: retry them now.
        released = await self.store.release_leases(f"{s.server.node_id}:", time.time(), prefix=True)
        if released:
            log.info("released %d deliveries leased by an earlier run of this node", released)
        if any(domain.dkim_pairs() for domain in s.domains):
            # Imported only then: signing itself happens in the delivery process.
            from mailgate.delivery.dkim import DkimSigner

            signed = DkimSigner.from_settings(s).domains()  # the keys load, or serve stops here
            log.info("DKIM signing for %s", ", ".join(sorted(signed)))
        # The relay-wide key of tracking and unsubscribe links: made by the first node.
        tracking_key = await self.store.tracking.key(new_key())
        # The delivery process gets ready while the listeners start, before the scheduler.
        self.delivery.set_tracking_key(tracking_key)
        if s.delivery.enabled:
            self._starting = asyncio.create_task(
                self.delivery.start(), name="mailgate-delivery-start"
            )
        self.suppressions = SuppressionList(self.store)
        await self.suppressions.load()
        self.suppressions.start()
        self.metrics = Metrics()
        self.inflight = InflightBudget(s.max_inflight_bytes)
        log.info("in-flight message bytes capped at %d", s.max_inflight_bytes)
        self.metrics.watch_inflight(self.inflight)
        ballast = ballast_for(s)
        self.space = FreeSpace(watched_path(s), s.min_free_space, ballast=ballast)
        self.metrics.free_space.set_function(self.space.free)
        self.scheduler = Scheduler(
            s, self.store, self.delivery, self.owner, on_recorded=self._recorded
        )
        self.webhooks = WebhookDispatcher(s, self.store, self.owner, on_outcome=self._webhooked)
        await self.webhooks.start()
        self.acceptor = Acceptor(
            s,
            self.store,
            on_commit=self._committed,
            suppressed=self.suppressions,
            unsubscribed=self.suppressions.unsubscribes,
            metrics=self.metrics,
            space=self.space,
        )
        tracking = self.tracking = None
        if s.http.public_url:  # links point there: without it none is ever made
            tracking = self.tracking = Tracking(
                self.store,
                Signer(tracking_key),
                bounce_domain=s.bounce_domain,
                suppressions=self.suppressions,
            )
        bounces = BounceIntake(s, self.store, self.suppressions)
        handler = SmtpHandler(
            s,
            self.store,
            self.acceptor,
            bounces,
            unsubscribes=tracking,
            inflight=self.inflight,
        )
        self.smtp = SmtpListeners(s, handler)
        await self.smtp.start()
        self.first_attempts = FirstAttempts(self.store)
        api = self.api = ApiContext(
            settings=s,
            store=self.store,
            acceptor=self.acceptor,
            limiter=RateLimiter(),
            metrics=self.metrics,
            attempts=self.first_attempts,
            wake=self.scheduler.wake,
            webhooks=self.webhooks,
            tracking=tracking,
            providers=self.delivery.provider_status if s.delivery.enabled else None,
            inflight=self.inflight,
        )
        self.http = HttpServer(s, create_app(api))
        await self.http.start()
        self._maintenance = asyncio.create_task(self._housekeeping(), name="mailgate-housekeeping")
        self._retention = asyncio.create_task(
            Retention(s, self.store, space=self.space).run(), name="mailgate-retention"
        )
        if self.store.dialect == "sqlite":
            self._subjects = asyncio.create_task(
                SubjectIndexer(self.store).run(), name="mailgate-subject-index"
            )
        if ballast is not None:  # SQLite: made now if there is room, and after a release
            self.metrics.ballast.set_function(ballast.held)
            self._ballast = asyncio.create_task(keep(ballast, self.space), name="mailgate-ballast")
        self._lag_watch = asyncio.create_task(
            self.metrics.watch_event_loop(), name="mailgate-loop-lag"
        )
        if self._starting is not None:
            await self._starting
            self.scheduler.start()
        else:
            log.warning("delivery is disabled ([delivery] enabled = false): mail is only queued")
        self._ready.set()
        sd_notify("READY=1")

    def request_reload(self) -> None:
        """SIGHUP: reload once the relay has started (several in a row run one after another)."""
        task = asyncio.create_task(self.reload(), name="mailgate-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Read relay.toml again and apply what can change without a restart (reload.py);
        sessions, connections and queued mail are untouched. False, with the old settings
        still running, when the file is refused (logged with the file and the key)."""
        await self._ready.wait()
        async with self._reload_lock:
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                refused = await self._reload()
            except Exception as exc:  # a bug: the reload fails, the relay goes on as it was
                log.exception("reload failed")
                refused = f"reload failed: {exc!r}"
            finally:
                sd_notify("READY=1")
            # For `mailgate reload`, which waits for it (it said "ok" whatever happened).
            reload.write_outcome(self.settings, refused, time.time())
            return refused is None

    async def _reload(self) -> str | None:
        """None once applied, else why it was refused (logged too)."""
        old = self.settings
        log.info("reloading %s", old.source)
        try:
            new, restart = reload.read(old)
            if any(domain.dkim_pairs() for domain in new.domains):
                from mailgate.delivery.dkim import DkimSigner

                DkimSigner.from_settings(new)  # the keys load, or the reload stops here
        except ConfigError as exc:
            log.error("reload refused, the running settings stay: %s", exc)
            return str(exc)
        for line in restart:
            log.warning("reload: %s", line)
        assert self.delivery is not None and self.scheduler is not None
        if new.delivery.enabled:
            try:
                # First, as the one step that can fail: then nothing else has changed yet.
                await self.delivery.reconfigure(new)
            except WorkerUnavailable as exc:
                log.error("reload refused, the running settings stay: %s", exc)
                return str(exc)
        self.settings = new
        self.scheduler.reconfigure(new)
        if self.acceptor is not None:
            self.acceptor.reconfigure(new)
        if self.smtp is not None:
            self.smtp.reconfigure(new)
        if self.api is not None:
            self.api.settings = new
        if self.webhooks is not None:
            try:
                await self.webhooks.reconfigure(new)
            except MailgateError as exc:
                # The store or the new webhook process failed: the outbox keeps the events;
                # the lanes go on with what the store holds, and the next reload tries again.
                log.error("reload: webhooks not updated: %s", exc)
        log.info(
            "reloaded %s: %d domain(s), %d provider(s), %d route(s), %d webhook endpoint(s)",
            new.source,
            len(new.domains),
            len(new.providers),
            len(new.routes),
            len(new.webhooks.endpoints),
        )
        return None

    def _committed(self, due: float | None) -> None:
        """Mail was accepted: the delivery loop has work, the outbox may have events."""
        assert self.scheduler is not None and self.webhooks is not None
        self.scheduler.wake(due)
        self.webhooks.wake()

    def _webhooked(self, status: str, ok: bool) -> None:
        self.metrics.webhooks.labels("succeeded" if ok else status).inc()

    def _recorded(self, record: AttemptRecord) -> None:
        """An attempt's outcome is committed: count it, and refuse hard-bounced addresses."""
        if self.webhooks is not None:
            self.webhooks.wake()
        for u in record.updates:
            self.metrics.results.labels(u.status.value, u.provider).inc()
        self.first_attempts.recorded(record.updates)
        if record.suppress and self.suppressions is not None:
            self.suppressions.added([x.address for x in record.suppress])

    async def _housekeeping(self) -> None:
        """Periodic chores: finish job resumes a dead node left half done; forget
        Idempotency-Key answers older than 24 h."""
        assert self.store is not None
        while True:
            try:
                resumed = await self.store.jobs.finish_interrupted(time.time())
                if resumed:
                    log.info("finished %d interrupted job resume(s)", resumed)
                    if self.scheduler is not None:
                        self.scheduler.wake()
                purged = await self.store.purge_idempotency(time.time() - 24 * 3600)
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            except MailgateError as exc:
                log.warning("housekeeping failed: %s", exc)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def stop(self) -> None:
        sd_notify("STOPPING=1")
        grace = self.settings.delivery.shutdown_grace
        for task in (
            self._maintenance,
            self._lag_watch,
            self._retention,
            self._subjects,
            self._ballast,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.http is not None:
            await self.http.stop()
        if self.tracking is not None:  # the opens and clicks answered but not written yet
            await self.tracking.close()
        if self.smtp is not None:
            await self.smtp.stop(grace=min(5.0, grace))
        if self.scheduler is not None:
            await self.scheduler.stop(grace)
        if self._starting is not None:  # a start that failed half-way: let it finish
            with contextlib.suppress(Exception):
                await self._starting
        if self.delivery is not None:
            await self.delivery.close()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.suppressions is not None:
            await self.suppressions.stop()
        if self.store is not None:
            await self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self._watchdog is not None:  # last: the pings go on through a long shutdown
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then shut down in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
            collector.settle()  # what was built so far lives as long as the process
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)
            await self._stop.wait()
            log.info("shutting down")
        finally:
            with contextlib.suppress(Exception):
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            for task in list(self._reloads):
                task.cancel()
            if self._reloads:
                await asyncio.wait(set(self._reloads))
            await self.stop()
            log.info("stopped")

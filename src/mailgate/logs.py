"""The relay's log: one format for the relay and its child processes, written in batches.

Two formats (``[server] log_format``): "text", a line for people, and "json", one object
per line for log collectors. A call site passes what a machine wants to know beside the
text as ``extra=fields(message_id=..., provider=...)``: the JSON format writes those as keys
of their own, the text format leaves them out (its message says the same in words).
Nothing secret is ever passed: no bodies, keys or passwords (tests/integration/test_logs.py).
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
# How a child process (workers.ChildProcess) learns the relay's format: it is started with
# this variable set, and its setup_logging() reads it.
LOG_FORMAT_ENV = "MAILGATE_LOG_FORMAT"
_FIELDS = "mailgate_fields"  # the LogRecord attribute that carries fields()
_format: LogFormat = "text"


class Repeats:
    """One call site's recurring failure, said once and then at most once every ``every``
    seconds with how many came in between: a full disk or a database that is away fails
    the same way every second, and a line each time buries what else happens (and fills
    the disk the logs may share). :meth:`ok` after a success says the next one at once."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        every: float = 60.0,
        clock: Any = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._every = every
        self._clock = clock
        self._said_at: float | None = None
        self._since = 0

    def log(self, msg: str, *args: Any) -> None:
        now = self._clock()
        if self._said_at is not None and now - self._said_at < self._every:
            self._since += 1
            return
        if self._since:
            msg += f" (and {self._since} times more in the last {now - self._said_at:.0f} s)"
        self._logger.log(self._level, msg, *args)
        self._said_at, self._since = now, 0

    def ok(self) -> None:
        self._said_at, self._since = None, 0


def fields(**values: Any) -> dict[str, Any] | None:
    """``extra=`` for a log call: structured values for the JSON format (None are left out).
    None in the text format, which shows none of them: nothing is built per record."""
    if _format == "text":
        return None
    return {_FIELDS: {k: v for k, v in values.items() if v is not None}}


def current_format() -> LogFormat:
    """The format setup_logging() chose in this process (for the children it starts)."""
    return _format


def recipient_domain(address: str) -> str:
    """The domain of an address, lower case: logged instead of the address in fields."""
    return address.rpartition("@")[2].lower().rstrip(">")


class _LogFormatter(logging.Formatter):
    """The usual format; the time text is made once per second, not once per record."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601, ms), level, logger, message, the
    record's fields(), and the exception's traceback as ``error`` if there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            stamp = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._second_text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        out: dict[str, Any] = {
            "time": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, _FIELDS, None)
        if extra:
            out.update(extra)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["error"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class _BufferedLogHandler(logging.StreamHandler):
    """Writes log lines in batches: one write() per batch, not a write and flush per record.

    At thousands of messages a second the "queued" lines alone would otherwise cost a
    system call each on the event loop. A batch is written when a WARNING or worse arrives
    (with the lines before it, in order), when ``capacity`` lines wait, ``interval`` seconds
    after the first waiting line (by a daemon thread), and at exit (an atexit hook of its
    own: logging.shutdown forgets handlers once something calls dictConfig, as uvicorn
    does), so a clean shutdown loses nothing. A SIGKILL loses at most the last
    ``interval`` seconds of lines below WARNING.
    """

    def __init__(self, stream: TextIO, *, interval: float = 0.2, capacity: int = 1000) -> None:
        super().__init__(stream)
        self._interval = interval
        self._capacity = capacity
        self._pending: list[str] = []
        self._waiting = threading.Event()
        self._flusher: threading.Thread | None = None
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # While the interpreter shuts down (a __del__ logging, say aiohttp's unclosed
        # session) no thread can start, Thread.start would wait for ever, and the flusher
        # may be gone: the line is written at once.
        finalizing = sys.is_finalizing()
        if not self._pending and not finalizing:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_later, name="mailgate-log", daemon=True
                )
                self._flusher.start()
            self._waiting.set()
        self._pending.append(line)
        if finalizing or record.levelno >= logging.WARNING or len(self._pending) >= self._capacity:
            try:
                self._write()
            except Exception:
                self.handleError(record)

    def flush(self) -> None:
        with self.lock:
            try:
                self._write()
            except Exception:  # stderr is gone: there is nowhere left to report it
                self._pending.clear()

    def _write(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self.stream.write(text)
        self.stream.flush()

    def _flush_later(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(self._interval)
            self._waiting.clear()
            self.flush()


def setup_logging(level: str, log_format: LogFormat | None = None) -> None:
    """Log to stderr at ``level`` in ``log_format`` (None: the relay's, for a child)."""
    global _format
    if log_format is None:
        log_format = "json" if os.environ.get(LOG_FORMAT_ENV) == "json" else "text"
    _format = log_format
    handler = _BufferedLogHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # Per-record details the format does not show (logging HOWTO, "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor where each call was made from: neither format shows a file or line, and finding
    # the caller's frame was 1.6% of the relay's event loop under SMTP load. The HOWTO
    # names this module attribute for that purpose.
    logging._srcfile = None
    logging.getLogger("aiosmtpd").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # Alembic's start-up chatter (plugins set up, the dialect): nine lines at every start.
    # Its "Running upgrade a -> b" lines stay: they say what a start changed.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_only_upgrades)


def _only_upgrades(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or str(record.msg).startswith("Running ")

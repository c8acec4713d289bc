"""The relay's log: one format for the relay and its child processes, written in batches."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import TextIO


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
        if not self._pending:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_later, name="mailgate-log", daemon=True
                )
                self._flusher.start()
            self._waiting.set()
        self._pending.append(line)
        if record.levelno >= logging.WARNING or len(self._pending) >= self._capacity:
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


def setup_logging(level: str) -> None:
    handler = _BufferedLogHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # Per-record details the format does not show (logging HOWTO, "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiosmtpd").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)

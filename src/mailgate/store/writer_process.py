"""The SQLite queue's writer process: ``python -m mailgate.store.writer_process``.

``mailgate serve`` commits every write here (writer.py says why), one group transaction
per request. Unlike the other children it is not niced: every accept waits for its commit.
"""

from __future__ import annotations

from typing import Any

from mailgate.store.sqlite_writer import SqliteTransactions
from mailgate.store.statements import SQLITE_BULK, write_statements
from mailgate.worker_child import child_setup, serve_blocking
from mailgate.workers import WorkerPool

# Time for a transaction under way to commit once the relay closes our stdin.
STOP_TIMEOUT = 30.0


class WriterProcess(WorkerPool):
    def __init__(self, url: str) -> None:
        super().__init__(__name__, url, 1, what="queue writer process", stop_timeout=STOP_TIMEOUT)


def _setup(url: str) -> Any:
    return SqliteTransactions(url, write_statements("sqlite"), SQLITE_BULK).answer


if __name__ == "__main__":
    from mailgate.logs import setup_logging

    child_setup(nice=False)
    setup_logging("warning")  # to the relay's stderr, in its format
    serve_blocking(_setup)

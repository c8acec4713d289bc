"""The exceptions a job's caller gets for what its transaction raised: typed, so that
accept paths can answer a duplicate, a full disk or a broken queue each in its own way."""

from __future__ import annotations

import errno

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mailgate.exceptions import DuplicateEntry, InsufficientStorage, StoreUnavailable


class CommitUnknown(StoreUnavailable):
    """A transaction that may or may not have committed: the answer to its COMMIT was lost
    with the database connection, or the writer process died with it.

    Its jobs fail (a client retries: delivery is at least once) rather than run again: a
    second run of what did commit inserts the same message twice (refused as a duplicate,
    an error where the message was in fact queued) or records a result twice.
    """


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection is gone (not that a statement failed)."""
    return isinstance(exc, OSError) or bool(getattr(exc, "connection_invalidated", False))


def store_error(exc: Exception) -> Exception:
    """The exception a job's caller gets for ``exc`` raised in its transaction."""
    if isinstance(exc, IntegrityError):
        dup = DuplicateEntry(str(exc.orig))
        dup.__cause__ = exc
        return dup
    if disk_full(exc):
        full = InsufficientStorage(brief(exc))
        full.__cause__ = exc
        return full
    if isinstance(exc, SQLAlchemyError | OSError):
        err = StoreUnavailable(brief(exc))
        err.__cause__ = exc
        return err
    return exc


# How much of an error's text is kept: a driver's message is a line or two.
_BRIEF = 500


def brief(exc: BaseException) -> str:
    """What went wrong in the driver's own words, without SQLAlchemy's copy of the
    statement and its parameters: a bulk statement is kilobytes long, and its parameters
    hold message bodies, which have no place in a log line (logged every second while a
    disk was full: 0.7 GB a day)."""
    orig = getattr(exc, "orig", None)
    text = f"{type(orig).__name__}: {orig}" if orig is not None else str(exc)
    return text if len(text) <= _BRIEF else text[:_BRIEF] + "..."


# SQLITE_FULL (13); PostgreSQL's disk_full SQLSTATE; the errno of a full file system.
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the database's storage is full: SQLite's "database or disk is
    full", PostgreSQL's disk_full, or ENOSPC. Such a write is refused like one below the
    free-space reserve (InsufficientStorage), not reported as a broken queue."""
    if isinstance(exc, InsufficientStorage):
        return True
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    if getattr(orig, "sqlstate", None) == _PG_DISK_FULL or getattr(orig, "pgcode", None) == (
        _PG_DISK_FULL
    ):
        return True
    if isinstance(orig, OSError) and orig.errno == errno.ENOSPC:
        return True
    return "database or disk is full" in str(exc) or "No space left on device" in str(exc)

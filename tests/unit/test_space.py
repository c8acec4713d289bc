"""The free-space reserve: its default, the once-a-second check, a full disk reported by the
database, and which errors count as a full disk."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from mailgate.config import load_settings
from mailgate.exceptions import ConfigError, InsufficientStorage, StoreUnavailable
from mailgate.space import FreeSpace, watched_path
from mailgate.store.write_errors import disk_full, store_error


def settings(**sections):  # type: ignore[no-untyped-def]
    return load_settings(data={"delivery": {"enabled": False}, **sections}, environ={})


def test_default_reserve_is_the_larger_of_256mb_and_four_messages() -> None:
    assert settings().min_free_space == 256_000_000
    assert settings(smtp={"max_message_size": "100MB"}).min_free_space == 400_000_000
    assert settings(server={"min_free_space": "1GB"}).min_free_space == 1_000_000_000
    assert settings(server={"min_free_space": 0}).min_free_space == 0
    with pytest.raises(ConfigError, match="min_free_space"):
        settings(server={"min_free_space": "lots"})


def test_retention_defaults_and_order() -> None:
    r = settings().retention
    assert (r.bodies, r.records) == (7 * 86400, 90 * 86400)
    with pytest.raises(ConfigError, match="retention"):
        settings(retention={"bodies": "100d", "records": "90d"})


def test_watched_path_is_the_sqlite_files_directory_or_data_dir(tmp_path: Path) -> None:
    s = settings(
        server={"data_dir": str(tmp_path / "d")}, database={"url": f"sqlite:///{tmp_path}/q/x.db"}
    )
    assert watched_path(s) == (tmp_path / "q").resolve()
    s = settings(server={"data_dir": str(tmp_path / "d")}, database={"url": "postgresql://h/db"})
    assert watched_path(s) == (tmp_path / "d").resolve()


class FakeFs:
    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0

    def __call__(self, path: Path) -> os.statvfs_result:
        self.calls += 1
        return os.statvfs_result((4096, 4096, 0, 0, self.free // 4096, 0, 0, 0, 0, 255))


def test_checked_at_most_once_per_interval_and_full_disk_holds() -> None:
    now = [0.0]
    fs = FakeFs(10 * 4096)
    space = FreeSpace(Path("/q"), 5 * 4096, clock=lambda: now[0], statvfs=fs)
    assert not space.low() and not space.low() and fs.calls == 1
    fs.free = 4096
    assert not space.low()  # not looked again within the second
    now[0] = 1.0
    assert space.low() and fs.calls == 2
    fs.free = 10 * 4096
    now[0] = 2.0
    assert not space.low()
    space.consumed(6 * 4096)  # mail accepted since: counted before the next look
    assert space.low() and space.free() == 4 * 4096
    now[0] = 3.0
    assert not space.low() and fs.calls == 4
    space.note_full()  # the database said so: refused until the next look shows room
    assert space.low()
    now[0] = 4.0
    assert not space.low()


def test_errors_that_mean_a_full_disk() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    wrapped = OperationalError("INSERT", {}, full)
    assert disk_full(wrapped)
    assert isinstance(store_error(wrapped), InsufficientStorage)
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert not disk_full(locked)
    err = store_error(locked)
    assert isinstance(err, StoreUnavailable) and not isinstance(err, InsufficientStorage)

"""The reserve's ballast: its size, its file beside the SQLite database (allocated, whole or
absent), and how free space counts it while it is released."""

from __future__ import annotations

import os
from pathlib import Path

from mailgate.ballast import MIN_SIZE, Ballast, ballast_path, default_size
from mailgate.config import load_settings
from mailgate.config_service import DatabaseSettings
from mailgate.space import FreeSpace, ballast_for
from mailgate.store.engine import WAL_SIZE_LIMIT

MiB = 1024**2


def settings(tmp_path: Path, **server: object):  # type: ignore[no-untyped-def]
    return load_settings(
        data={"server": {"data_dir": str(tmp_path), **server}, "delivery": {"enabled": False}},
        environ={},
    )


def test_default_size_is_a_quarter_of_the_reserve_within_bounds(tmp_path: Path) -> None:
    # A checkpoint of a WAL full of new pages needs that much room in the database file.
    assert MIN_SIZE >= WAL_SIZE_LIMIT
    assert default_size(12_000_000) == 16 * MiB
    assert default_size(100 * MiB * 4) == 64 * MiB
    assert default_size(128 * MiB) == 32 * MiB
    assert settings(tmp_path).ballast_size == 64_000_000  # a quarter of 256 MB
    assert settings(tmp_path, ballast_size="20MB").ballast_size == 20_000_000
    assert settings(tmp_path, ballast_size=0).ballast_size == 0


def test_beside_the_sqlite_file_and_none_on_postgresql(tmp_path: Path) -> None:
    ballast = ballast_for(settings(tmp_path))
    assert ballast is not None
    assert ballast.path == (tmp_path / "mailgate.db-reserve").resolve()
    assert ballast_path("/q/x.db") == Path("/q/x.db-reserve")
    pg = settings(tmp_path).model_copy(
        update={"database": DatabaseSettings(url="postgresql://h/d")}
    )
    assert ballast_for(pg) is None


def test_made_on_disk_released_and_made_again(tmp_path: Path) -> None:
    ballast = Ballast(tmp_path / "q.db-reserve", 3 * MiB)
    assert ballast.held() == 0 and ballast.missing() == 3 * MiB
    assert ballast.make()
    st = ballast.path.stat()
    assert st.st_size == 3 * MiB and st.st_blocks * 512 >= 3 * MiB  # allocated, not sparse
    assert ballast.missing() == 0 and ballast.make()  # whole: nothing to do
    assert [p.name for p in tmp_path.iterdir()] == ["q.db-reserve"]  # no temporary left
    assert ballast.release() == 3 * MiB
    assert not ballast.path.exists() and ballast.release() == 0
    assert ballast.make() and ballast.held() == 3 * MiB


def test_off_or_smaller_deletes_the_file_found(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.db-reserve"
    path.write_bytes(b"\0" * 4096)
    assert ballast_for(settings(tmp_path, ballast_size="8KB")) is not None
    assert path.exists()  # smaller than wanted: kept, and grown by keep()
    assert ballast_for(settings(tmp_path, ballast_size="1KB")) is not None
    assert not path.exists()  # bigger than wanted: made again at the new size
    path.write_bytes(b"\0" * 4096)
    assert ballast_for(settings(tmp_path, ballast_size=0)) is None
    assert not path.exists()


def test_a_released_ballast_counts_as_taken(tmp_path: Path) -> None:
    """Its space is the drain's: new mail stays refused until the ballast fits again."""
    ballast = Ballast(tmp_path / "q.db-reserve", 3 * 4096)
    free = [20 * 4096]

    def statvfs(_path: Path) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, 0, 0, free[0] // 4096, 0, 0, 0, 0, 255))

    now = [0.0]
    space = FreeSpace(tmp_path, 10 * 4096, clock=lambda: now[0], statvfs=statvfs, ballast=ballast)
    assert space.free() == 17 * 4096  # not made yet: its bytes are spoken for
    assert ballast.make()
    free[0] -= 3 * 4096
    now[0] = 1.0
    assert space.free() == 17 * 4096 and not space.low()
    ballast.release()
    free[0] = 12 * 4096  # the drain used some of what the ballast held
    now[0] = 2.0
    assert space.free() == 9 * 4096 and space.low()

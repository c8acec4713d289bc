"""What a failed statement says in logs and in the errors callers get: the driver's words,
never the statement's parameters (message bodies) nor a bulk statement's kilobytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from mailgate.exceptions import StoreUnavailable
from mailgate.store.engine import create_sync_writer_engine
from mailgate.store.write_errors import brief, store_error


def test_an_error_names_neither_the_parameters_nor_the_whole_statement(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    engine = create_sync_writer_engine(make_url(f"sqlite:///{tmp_path / 'q.db'}"))
    secret = "Dear customer, your password is hunter2"
    values = ", ".join(f"(:p{i})" for i in range(2000))
    with pytest.raises(OperationalError) as caught, engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO no_such_table (raw) VALUES {values}"),
            {f"p{i}": secret for i in range(2000)},
        )
    assert secret not in str(caught.value)  # hide_parameters on the engine
    err = store_error(caught.value)
    assert isinstance(err, StoreUnavailable)
    assert str(err) == "OperationalError: no such table: no_such_table"
    assert len(brief(RuntimeError("x" * 10_000))) == 503

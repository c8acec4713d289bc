"""What the SMTP benches read of a running relay besides its replies: the queue in its
SQLite database (backlog, statuses, failover events, signed sends) and the event loop
lag histogram on /metrics, each at the edges of the measuring window or after it."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

from bench import HOST


def pending(db: Path) -> int:
    """Deliveries not yet final (due, deferred or leased): the queue backlog."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM deliveries WHERE next_attempt_at IS NOT NULL"
        ).fetchone()
    return int(n)


_LAG_BUCKET = re.compile(r'^mailgate_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def loop_lag_buckets(http_port: int) -> dict[float, float]:
    """mailgate's event loop lag histogram from /metrics: {upper bound s: cumulative count}."""
    url = f"http://{HOST}:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {float(le): float(n) for le, n in _LAG_BUCKET.findall(text)}


def lag_stats(start: dict[float, float], end: dict[float, float]) -> dict[str, Any]:
    """The window's share of the histogram: samples, the bucket bounds holding p50/p99/the
    worst sample, and how many samples were over 10 ms."""
    diff = sorted((le, end.get(le, 0.0) - start.get(le, 0.0)) for le in end)
    total = diff[-1][1] if diff else 0.0

    def bound(q: float) -> float:
        return next((le for le, n in diff if n >= q * total), float("inf"))

    over_10ms = total - next((n for le, n in diff if le >= 0.01), total)
    return {
        "lag_samples": int(total),
        "lag_p50": bound(0.5),
        "lag_p99": bound(0.99),
        "lag_max": bound(1.0),
        "lag_over_10ms": int(over_10ms),
    }


def statuses(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def failover_events(db: Path, since: float) -> dict[str, Any]:
    """How many deliveries still tried the dead provider, and when (s after ``since``)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        n, first, last = conn.execute(
            "SELECT count(*), min(at), max(at) FROM events WHERE type='failover'"
        ).fetchone()
    return {
        "failovers": int(n),
        "failover_first": (first - since) if first is not None else None,
        "failover_last": (last - since) if last is not None else None,
    }


def signed_sends(db: Path) -> tuple[int, int]:
    """(successful attempts, those whose copy was DKIM-signed): an attempt's event keeps
    its signer in ``data`` (store/rows.py attempt_data)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        total, signed = conn.execute(
            "SELECT count(*), coalesce(sum(data LIKE '%\"dkim\"%'), 0) FROM events "
            "WHERE type IN ('sent', 'delivered')"
        ).fetchone()
    return int(total), int(signed)

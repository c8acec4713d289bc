"""Latency and rate arithmetic shared by the benches' reports: nearest-rank percentiles,
the window's delivered rate and backlog, 250->delivered per message, and PASS/FAIL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Windowed(Protocol):
    """A load's measuring window, in seconds (the SMTP bench's LoadResult)."""

    window: float


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when there are none)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def window_rates(load: Windowed, edges: dict[str, Any]) -> dict[str, Any]:
    """Delivered rate and backlog growth inside the measuring window (sink and db probes)."""
    window = load.window
    delivered = edges["end"]["delivered"] - edges["start"]["delivered"]
    return {
        "delivered": delivered,
        "delivered_rate": delivered / window,
        "pending_start": edges["start"]["pending"],
        "pending_end": edges["end"]["pending"],
        "backlog_rate": (edges["end"]["pending"] - edges["start"]["pending"]) / window,
    }


def delivery_latency(
    acks: Sequence[tuple[str, float]], arrivals: dict[str, float]
) -> dict[str, Any]:
    """250->delivered per message accepted in the window: the sink's monotonic arrival time
    minus the client's (CLOCK_MONOTONIC is one clock for every process on Linux)."""
    ms = sorted((arrivals[qid] - t) * 1000 for qid, t in acks if qid in arrivals)
    return {
        "d_count": len(ms),
        "d_missing": len(acks) - len(ms),
        "d_p50": nearest_rank(ms, 50),
        "d_p99": nearest_rank(ms, 99),
        "d_max": ms[-1] if ms else float("nan"),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"

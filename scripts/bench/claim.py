"""Claim latency against the queue's depth, on SQLite and PostgreSQL (bench-pg's
``claim`` scenario).

For each engine and depth: an empty queue is filled with that many due deliveries (one
recipient per message, 300-byte bodies) through the store's own many-row writes (the
writer's insert_message / insert_delivery, in transactions of FILL_BATCH messages) and
settled (settle()), then ``store.claim`` (the scheduler's call: the three lane claims
and the messages' load, one writer transaction) is timed ``--claims`` times with
``--claim-batch`` deliveries each. After each timed pair the leases are released (due now,
so behind the rest), so the queue keeps its depth however many claims are timed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench import use_checkout
from bench.postgres import pg_async, reset_pg

use_checkout()

from mailgate.ids import new_id  # noqa: E402
from mailgate.models import NewMessage  # noqa: E402
from mailgate.store import Store  # noqa: E402
from mailgate.store import transactions as txn  # noqa: E402
from mailgate.store.enqueue import enqueue_ops  # noqa: E402
from mailgate.store.wal import checkpoint  # noqa: E402

FILL_BATCH = 10_000
BODY = b"Subject: claim bench\r\n\r\n" + b"x" * 280 + b"\r\n"


def _ops(count: int, at: float) -> list[Any]:
    batch = [
        NewMessage(new_id(), at, "b@example.com", ("r@dest.test",), BODY) for _ in range(count)
    ]
    # Messages and deliveries only: the 'queued' events play no part in a claim.
    return [op for op in enqueue_ops(batch) if op[0] != "insert_event"]


async def fill(store: Store, depth: int) -> float:
    """``depth`` due deliveries, due over the last hour; seconds it took."""
    t0 = time.monotonic()
    now = time.time()
    done = 0
    while done < depth:
        n = min(FILL_BATCH, depth - done)
        await store.writer.write(_ops(n, now - 3600 + 3600 * done / depth), durable=False)
        done += n
    await settle(store)
    return time.monotonic() - t0


async def settle(store: Store) -> None:
    """Leave the filled database as a queue that grew over hours would be: its pages on
    disk and its statistics current. Right after a bulk fill the kernel is still writing
    back its dirty pages (900 MB at 1M on SQLite) and PostgreSQL's autovacuum is visiting
    the new rows; the first flushes of the timed claims would wait behind that (SQLite's
    first WAL checkpoints went to 400 ms), which times the fill, not the claim."""
    if store.dialect == "postgresql":
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM (ANALYZE) deliveries")
            await conn.exec_driver_sql("VACUUM (ANALYZE) messages")
            await conn.exec_driver_sql("CHECKPOINT")
    else:
        path = store.engine.url.database
        assert path is not None
        await asyncio.to_thread(checkpoint, path, "TRUNCATE", timeout=10.0)
    await asyncio.to_thread(os.sync)


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    samples.sort()
    return (
        statistics.median(samples),
        samples[min(len(samples) - 1, round(0.99 * len(samples)))],
        samples[-1],
    )


async def time_claims(store: Store, claims: int, batch: int) -> dict[str, Any]:
    """Alternately: the claim statement alone (txn.claim_lane of lane 0 in a writer
    transaction: one UPDATE ... RETURNING on PostgreSQL, two statements on SQLite) and the
    scheduler's whole store.claim (lanes, messages' load with their bodies). Both commit
    without a flush of their own, as the scheduler's claims do (store.claim)."""
    stmt: list[float] = []
    full: list[float] = []
    got = 0
    for i in range(claims + 5):
        now = time.time()
        t0 = time.perf_counter()
        rows = await store.writer.run(
            txn.claim_lane, 0, "bench:1", now, batch, now + 900, durable=False
        )
        t1 = time.perf_counter()
        claimed = await store.claim("bench:1", now, batch, now + 900)
        t2 = time.perf_counter()
        if i >= 5:  # the first few warm caches and statements
            stmt.append((t1 - t0) * 1000)
            full.append((t2 - t1) * 1000)
            got += len(rows) + sum(len(m.deliveries) for m in claimed)
        # Due again (last in line): the queue keeps its depth however many claims are timed.
        await store.release_leases("bench:1", time.time())
    s50, s99, smax = _percentiles(stmt)
    f50, f99, fmax = _percentiles(full)
    return {"claims": claims, "claimed": got, "p50": s50, "p99": s99, "max": smax,
            "full_p50": f50, "full_p99": f99, "full_max": fmax}  # fmt: skip


async def claim_latency(
    engine: str, url: str, depth: int, workdir: Path, claims: int, batch: int
) -> dict[str, Any]:
    """Fill an empty queue of ``engine`` to ``depth``, then time claims on it."""
    if engine == "sqlite":
        folder = workdir / f"claim-{depth}"
        folder.mkdir(exist_ok=True)
        url = f"sqlite+aiosqlite:///{folder / 'q.db'}"
    else:
        await reset_pg(url)
        url = pg_async(url)
    store = await Store.open(url, writer_process=engine == "sqlite")
    try:
        filled = await fill(store, depth)
        result = await time_claims(store, claims, batch)
    finally:
        await store.close()
    return {"engine": engine, "depth": depth, "fill_s": filled, **result}


def print_claims(rows: list[dict[str, Any]], batch: int, target_ms: float) -> None:
    print(f"\nclaim latency, ms: the claim statement of {batch} deliveries, and store.claim")
    print(
        f"{'engine':<9}{'queued':>11}{'fill s':>8}{'stmt p50':>10}{'p99':>8}{'max':>8}"
        f"{'claim p50':>11}{'p99':>8}{'max':>8}"
    )
    for r in rows:
        print(
            f"{r['engine']:<9}{r['depth']:>11,}{r['fill_s']:>8.1f}"
            f"{r['p50']:>10.2f}{r['p99']:>8.2f}{r['max']:>8.2f}"
            f"{r['full_p50']:>11.2f}{r['full_p99']:>8.2f}{r['full_max']:>8.2f}"
        )
    for engine in sorted({r["engine"] for r in rows}):
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["depth"])
        if len(mine) >= 2:
            flat = mine[-1]["p99"] / mine[0]["p99"]
            top = mine[-1]
            verdict = "PASS" if max(top["p99"], top["full_p99"]) < target_ms else "FAIL"
            print(
                f"{engine}: statement p99 at {top['depth']:,} is {flat:.2f}x the p99 at"
                f" {mine[0]['depth']:,}; target p99 < {target_ms:g} ms (statement"
                f" {top['p99']:.2f}, store.claim {top['full_p99']:.2f}): {verdict}"
            )


def run(engine: str, url: str, depth: int, workdir: Path, claims: int, batch: int) -> Any:
    return asyncio.run(claim_latency(engine, url, depth, workdir, claims, batch))

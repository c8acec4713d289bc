"""Retention at steady state, on SQLite (a temp file, the writer in its own process as in
``mailgate serve``).

1. Steady state, accelerated clock: ``--rate`` messages per simulated second (2 KB, one
   recipient) are committed, claimed and recorded as sent, for ``--duration`` simulated
   seconds, with [retention] ``--bodies`` and ``--records`` windows on the same clock and a
   retention round every ``--every`` simulated seconds. The database's size (file + WAL)
   is printed per records window: once the first window is full it stops growing, because
   each round removes what the window no longer holds and the freed pages are returned or
   reused. The windows are short so that the run takes a minute; the size at steady state
   scales with rate x window, whatever the clock.
2. Purge batch timings (p50 / p99 / max per batch of mailgate.retention.BATCH).
3. Accept latency, same run: ``--clients`` concurrent single-message commits (the accept
   path's store call) for ``--seconds`` without purging, then again while a backlog of
   ``--backlog`` finished messages is purged; p50 / p99 of each and their ratio.

Every number is one run on this machine, with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import use_checkout

use_checkout(children=True)  # the writer process imports mailgate too: this checkout's

from mailgate.config import load_settings  # noqa: E402
from mailgate.ids import new_id  # noqa: E402
from mailgate.models import DeliveryStatus  # noqa: E402
from mailgate.retention import Retention  # noqa: E402
from mailgate.store import DeliveryUpdate, NewMessage, Store  # noqa: E402

BODY = b"Subject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"


def message(at: float) -> NewMessage:
    return NewMessage(
        id=new_id(),
        created_at=at,
        sender="bench@example.com",
        recipients=("r@dest.test",),
        raw=BODY,
        subject="bench",
    )


def db_size(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def deliver(store: Store, at: float, count: int) -> None:
    """Claim up to ``count`` due deliveries at ``at`` and record them sent."""
    claimed = await store.claim("bench:1", at, count, at + 900)
    updates = [
        DeliveryUpdate(
            m.id, c.rcpt_idx, c.recipient, DeliveryStatus.SENT, 1, None, "p", "250 ok", "sent"
        )
        for m in claimed
        for c in m.deliveries
    ]
    if updates:
        await store.record("bench:1", at, updates)


async def steady_state(store: Store, path: Path, args: argparse.Namespace) -> list[float]:
    clock = {"now": 1_700_000_000.0}
    start = clock["now"]
    settings = load_settings(
        data={
            "delivery": {"enabled": False},
            "retention": {"bodies": args.bodies, "records": args.records},
        },
        environ={},
    )
    retention = Retention(settings, store, clock=lambda: clock["now"])
    batches: list[float] = []
    print(
        f"steady state: {args.rate} msgs/simulated s, bodies {args.bodies} s, records "
        f"{args.records} s, {args.duration} simulated s"
    )
    print(f"{'sim t (s)':>10} {'messages':>10} {'db MB':>8} {'purged':>8} {'real s':>7}")
    real0 = time.perf_counter()
    total = 0
    purged = 0
    for second in range(1, args.duration + 1):
        clock["now"] = start + second
        for chunk in range(0, args.rate, 500):
            n = min(500, args.rate - chunk)
            await store.enqueue([message(clock["now"]) for _ in range(n)])
            total += n
        await deliver(store, clock["now"], args.rate)
        if second % args.every == 0:
            done = await retention.round()
            batches += done.batches
            purged += done.messages
        if second % args.report == 0:
            print(
                f"{second:>10} {total:>10} {db_size(path) / 1e6:>8.1f} {purged:>8} "
                f"{time.perf_counter() - real0:>7.1f}"
            )
    held = args.rate * (args.records + args.every)
    print(f"the records window holds at most {held} messages ({args.rate} x (records + every))")
    return batches


async def latency(store: Store, clients: int, seconds: float) -> list[float]:
    samples: list[float] = []
    stop = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            await store.enqueue([message(time.time())])
            samples.append(time.perf_counter() - t)

    await asyncio.gather(*(client() for _ in range(clients)))
    return samples


async def accept_while_purging(store: Store, args: argparse.Namespace) -> None:
    old = time.time() - 400 * 86400
    for chunk in range(0, args.backlog, 500):
        await store.enqueue([message(old) for _ in range(min(500, args.backlog - chunk))])
    for _ in range(0, args.backlog, 1000):
        await deliver(store, old, 1000)
    settings = load_settings(data={"delivery": {"enabled": False}}, environ={})
    base = await latency(store, args.clients, args.seconds)
    retention = Retention(settings, store)
    began = time.perf_counter()
    purging = asyncio.create_task(retention.round())
    during = await latency(store, args.clients, args.seconds)
    done = await purging
    took = time.perf_counter() - began
    p99a, p99b = pct(base, 0.99), pct(during, 0.99)
    print(
        f"accept latency, {args.clients} concurrent single-message commits, {args.seconds} s each:"
    )
    print(
        f"  not purging: n={len(base)} p50 {statistics.median(base) * 1e3:.2f} ms "
        f"p99 {p99a * 1e3:.2f} ms"
    )
    print(
        f"  purging:     n={len(during)} p50 {statistics.median(during) * 1e3:.2f} ms "
        f"p99 {p99b * 1e3:.2f} ms  ({done.messages} messages, {done.pages} pages purged "
        f"in {len(done.batches)} batches)"
    )
    print(f"  p99 ratio: {p99b / p99a:.2f}x")
    print(
        f"  the purge round took {took:.1f} s ({done.messages / took:.0f} messages/s while "
        f"the clients ran {args.seconds} s of it)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        path = Path(tmp) / "q.db"
        store = await Store.open(f"sqlite+aiosqlite:///{path}", writer_process=True)
        try:
            batches = await steady_state(store, path, args)
            print(
                f"purge batches: n={len(batches)} p50 {pct(batches, 0.5) * 1e3:.1f} ms "
                f"p99 {pct(batches, 0.99) * 1e3:.1f} ms max {max(batches or [0]) * 1e3:.1f} ms"
            )
        finally:
            await store.close()
        path2 = Path(tmp) / "latency.db"
        store = await Store.open(f"sqlite+aiosqlite:///{path2}", writer_process=True)
        try:
            await accept_while_purging(store, args)
        finally:
            await store.close()
    print(f"(cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="bench-retention", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=int, default=1000, help="messages per simulated second")
    p.add_argument("--duration", type=int, default=240, help="simulated seconds")
    p.add_argument("--bodies", type=int, default=20, help="[retention] bodies, simulated s")
    p.add_argument("--records", type=int, default=60, help="[retention] records, simulated s")
    p.add_argument("--every", type=int, default=10, help="simulated s between rounds")
    p.add_argument("--report", type=int, default=30, help="simulated s between lines")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--backlog", type=int, default=50_000)
    asyncio.run(main(p.parse_args()))

"""A 100,000-recipient job: how long reading its progress and pausing, resuming and
stopping it take, on SQLite (a temp file) and, with ``--pg URL``, on PostgreSQL.

The job is built directly through ``Store.enqueue`` (``--messages`` messages of
``--recipients`` recipients each, 2 KB bodies, committed ``--chunk`` messages at a time,
the first chunk with the job row), then: the progress read ``--reads`` times (p50 / max),
and pause, resume, pause, stop once each, as JobStore.control (the HTTP routes and the CLI)
runs them: the job's state and event (a pause or stop is in effect from this commit: claims
park the job's deliveries), its deliveries not in flight (held, released or cancelled: a
resume is in effect from here), then its messages' derived status, in chunks.
Every number is one run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from bench import use_checkout
from bench.postgres import pg_async, reset_pg

use_checkout()

from mailgate.ids import new_id  # noqa: E402
from mailgate.store import NewJob, NewMessage, Store  # noqa: E402
from mailgate.store.job_actions import CONVERT_CHUNK, convert_chunk, set_state  # noqa: E402


async def bench(url: str, label: str, args: argparse.Namespace) -> None:
    store = await Store.open(url)
    try:
        job_id = new_id()
        now = time.time()
        body = b"Subject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"
        total = args.messages * args.recipients
        started = time.perf_counter()
        for start in range(0, args.messages, args.chunk):
            batch = [
                NewMessage(
                    id=new_id(),
                    created_at=now,
                    sender="bench@example.com",
                    recipients=[f"r{i}.{j}@dest.test" for j in range(args.recipients)],
                    raw=body,
                    subject="bench",
                    source="http",
                    job_id=job_id,
                )
                for i in range(start, min(args.messages, start + args.chunk))
            ]
            job = NewJob(job_id, "", "http", "bench", total, now) if start == 0 else None
            await store.enqueue(batch, job=job)
        built = time.perf_counter() - started
        print(f"[{label}] built a job of {total} recipients in {built:.1f} s")

        async def read() -> float:
            t = time.perf_counter()
            progress = await store.jobs.progress(job_id)
            assert progress is not None and progress.total == total
            return (time.perf_counter() - t) * 1000

        await read()  # warm the pool
        reads = [await read() for _ in range(args.reads)]
        print(
            f"[{label}] progress read: p50 {statistics.median(reads):.1f} ms,"
            f" max {max(reads):.1f} ms over {args.reads} reads"
        )
        for action in ("pause", "resume", "pause", "stop"):
            t = time.perf_counter()
            outcome = await store.writer.run(set_state, job_id, action, time.time())
            state_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            touched: list[str] = []
            first_ms = 0.0
            while True:
                changed = await store.writer.run(
                    convert_chunk, job_id, action, time.time(), CONVERT_CHUNK
                )
                first_ms = first_ms or (time.perf_counter() - t) * 1000
                if changed is None:
                    break
                touched += changed
            touched = list(dict.fromkeys(touched))
            convert_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            await store.jobs.refresh_messages(touched)
            refresh_ms = (time.perf_counter() - t) * 1000
            progress = await store.jobs.progress(job_id)
            assert outcome == "ok" and progress is not None
            counts = await store.status_counts()
            print(
                f"[{label}] {action:<6} job state {state_ms:6.1f} ms, deliveries: first"
                f" {CONVERT_CHUNK} {first_ms:6.1f} ms, all {convert_ms:7.1f} ms,"
                f" {len(touched)} messages' status {refresh_ms:7.1f} ms"
                f" -> {progress.status} (pending {progress.pending}; {counts})"
            )
        reads = [await read() for _ in range(args.reads)]
        print(f"[{label}] progress read after stop: p50 {statistics.median(reads):.1f} ms")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench-jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--pg", default="", help="also on this PostgreSQL database (emptied!)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(f"sqlite+aiosqlite:///{tmp}/bench.db", "sqlite", args))
    if args.pg:
        asyncio.run(reset_pg(args.pg))
        asyncio.run(bench(pg_async(args.pg), "postgresql", args))


if __name__ == "__main__":
    main()

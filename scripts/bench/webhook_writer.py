"""What webhooks cost the SQLite writer, measured in CPU time (``time.process_time``), so
that the figures hold on a loaded machine.

``python -m bench.webhook_writer`` (scripts/ on PYTHONPATH) runs the writer's own
transactions (``SqliteTransactions.run``: the code of the relay's writer process, without
its pipe) on a fresh queue, in the steady flow of ``paced-webhooks``: each cycle accepts
``--batch`` messages (one recipient each, durable), claims and records their attempts as
sent (the scheduler's and the recorder's transactions), and, with an endpoint subscribed
to every event, claims and records the webhooks of the cycle (two per message:
message.queued and message.sent) in one claim and one record each ``--hook-batch``
webhooks, as the dispatcher does. The same cycles run with no endpoint ("off") and with
one ("on"); the report gives the writer's CPU per transaction kind and per message, and
the bytes each kind adds to the WAL (what the commit writes, and fsyncs when durable).

The pickling of what a transaction returns (the writer process sends it back through its
pipe) is counted too, under "pickle".
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import use_checkout

use_checkout()

from mailgate.ids import new_id  # noqa: E402
from mailgate.models import NewMessage  # noqa: E402
from mailgate.store import transactions as txn  # noqa: E402
from mailgate.store import webhooks as wh  # noqa: E402
from mailgate.store.enqueue import enqueue_ops  # noqa: E402
from mailgate.store.rows import event_row  # noqa: E402
from mailgate.store.sqlite_writer import SqliteTransactions  # noqa: E402
from mailgate.store.statements import SQLITE_BULK, write_statements  # noqa: E402
from mailgate.store.write_batch import Work  # noqa: E402

BODY = b"Subject: webhook bench\r\nFrom: b@example.com\r\n\r\n" + b"x" * 900 + b"\r\n"
ENDPOINT = "whcfg_" + "0" * 24
OWNER = "bench:1"
KINDS = ("accept", "result", "hook-claim", "hook-record", "checkpoint")
# The WAL is checkpointed by hand once this big, its cost timed as "checkpoint" (the
# writer's own autocheckpoint would do the same work inside some commit).
CHECKPOINT_BYTES = 4 * 1024 * 1024


def _migrate(url: str) -> None:
    import asyncio

    from mailgate.store import Store

    async def run() -> None:
        store = await Store.open(url)
        await store.close()

    asyncio.run(run())


class Writer:
    """The writer's transactions on one queue, each timed in CPU and WAL bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        url = f"sqlite+aiosqlite:///{path}"
        _migrate(url)
        self.tx = SqliteTransactions(url, write_statements("sqlite"), SQLITE_BULK)
        self.cpu: dict[str, list[float]] = {k: [] for k in (*KINDS, "pickle")}
        self.wal: dict[str, list[int]] = {k: [] for k in KINDS}
        self.hooks = 0
        self._conn: Any = None

    def run(self, kind: str | None, works: list[Work], flush: bool) -> Any:
        size = self._wal_size()
        t0 = time.process_time()
        result = self.tx.run(works, flush)[0]
        t1 = time.process_time()
        blob = pickle.dumps(result)
        t2 = time.process_time()
        if kind is not None:
            self.cpu[kind].append(t1 - t0)
            self.cpu["pickle"].append(t2 - t1)
            self.wal[kind].append(self._wal_size() - size)
        del blob
        self._no_autocheckpoint()
        if self._wal_size() > CHECKPOINT_BYTES:
            t0 = time.process_time()
            self._dbapi().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.cpu["checkpoint"].append(time.process_time() - t0)
        return result

    def _dbapi(self) -> Any:
        conn = self.tx._conn
        assert conn is not None
        return conn.connection.dbapi_connection

    def _no_autocheckpoint(self) -> None:
        """The WAL grows by exactly what each commit writes (checkpoints by hand)."""
        if self.tx._conn is not self._conn:
            self._conn = self.tx._conn
            self._dbapi().execute("PRAGMA wal_autocheckpoint=0")

    def _wal_size(self) -> int:
        wal = Path(f"{self.path}-wal")
        return wal.stat().st_size if wal.exists() else 0

    def fn(self, kind: str | None, fn: Callable[..., Any], *args: Any, flush: bool) -> Any:
        return self.run(kind, [Work(fn=fn, args=args)], flush)

    def subscribe(self) -> None:
        now = time.time()
        row = {
            "id": ENDPOINT,
            "url": "http://127.0.0.1:9/hooks",
            "events": ["message.queued", "message.sent", "message.delivered", "job.completed"],
            "secret": "whsec_" + "A" * 32,
            "source": "config",
            "created_at": now,
            "updated_at": now,
        }
        self.fn(None, wh.create, row, flush=True)

    def cycle(self, batch: int, hook_batch: int, *, hooks: bool) -> None:
        now = time.time()
        msgs = [
            NewMessage(new_id(), now, "b@example.com", ("r@dest.test",), BODY, subject="hi")
            for _ in range(batch)
        ]
        self.run("accept", [Work(ops=enqueue_ops(msgs))], True)
        claimed = self.fn(None, txn.claim, OWNER, now, batch, now + 900, flush=False)
        upd, evt = [], []
        for m in claimed:
            for c in m.deliveries:
                upd.append(_result_row(c.message_id, c.rcpt_idx, now))
                evt.append(
                    event_row(c.message_id, c.rcpt_idx, c.recipient, "sent", now, "sink", "250 ok")
                )
        ops = [
            ("update_result", upd),
            ("insert_event", evt),
            ("update_message_status", [{"m_id": m.id} for m in claimed]),
        ]
        self.run("result", [Work(ops=ops)], False)
        if not hooks:
            return
        self.hooks += 2 * batch
        while self.hooks >= hook_batch:
            rows = self.fn(
                "hook-claim", wh.claim, ENDPOINT, OWNER, now, hook_batch, now + 120, flush=False
            )
            results = [wh.Result(r["id"], "succeeded", None, 200, "") for r in rows]
            self.fn("hook-record", wh.record, OWNER, results, [], now, flush=False)
            self.hooks -= hook_batch

    def close(self) -> None:
        self.tx.close()


def _result_row(message_id: str, rcpt_idx: int, now: float) -> dict[str, Any]:
    return {
        "b_message_id": message_id,
        "b_rcpt_idx": rcpt_idx,
        "b_owner": OWNER,
        "b_status": "sent",
        "b_attempts": 1,
        "b_next_attempt_at": None,
        "b_lane": 1,
        "b_provider": "sink",
        "b_response": "250 ok",
        "b_upstream_id": "",
        "b_now": now,
    }


def measure(hooks: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        w = Writer(Path(tmp) / "queue.db")
        try:
            if hooks:
                w.subscribe()
            for _ in range(args.warmup):
                w.cycle(args.batch, args.hook_batch, hooks=hooks)
            for k in w.cpu:
                w.cpu[k].clear()
            for k in w.wal:
                w.wal[k].clear()
            t0 = time.process_time()
            for _ in range(args.cycles):
                w.cycle(args.batch, args.hook_batch, hooks=hooks)
            total = time.process_time() - t0
        finally:
            w.close()
    messages = args.cycles * args.batch
    return {
        "cpu_us": {k: _mean_us(v) for k, v in w.cpu.items()},
        "count": {k: len(v) for k, v in w.cpu.items()},
        "wal": {k: statistics.fmean(v) if v else 0 for k, v in w.wal.items()},
        "writer_us_per_msg": 1e6 * sum(sum(v) for v in w.cpu.values()) / messages,
        "loop_us_per_msg": 1e6 * total / messages,
    }


def _mean_us(values: list[float]) -> float:
    return 1e6 * statistics.fmean(values) if values else 0.0


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Each kind's least disturbed figure: the lowest of the rounds' means (other work on
    the machine only ever adds CPU time)."""
    print(
        f"batch {args.batch} msg/accept, {args.cycles} cycles x {args.rounds} rounds,"
        f" hook batch {args.hook_batch}: CPU us per transaction (lowest round mean),"
        " WAL bytes per commit (mean)"
    )
    off, on = runs["off"], runs["on"]
    print(f"{'kind':12} {'off us':>9} {'on us':>9} {'off WAL':>9} {'on WAL':>9} {'n on':>6}")
    for k in (*KINDS, "pickle"):
        if not (off[0]["count"][k] or on[0]["count"][k]):
            continue
        print(
            f"{k:12} {min(r['cpu_us'][k] for r in off):9.1f}"
            f" {min(r['cpu_us'][k] for r in on):9.1f}"
            f" {off[0]['wal'].get(k, 0):9.0f} {on[0]['wal'].get(k, 0):9.0f}"
            f" {on[0]['count'][k]:6d}"
        )
    a = min(r["writer_us_per_msg"] for r in off)
    b = min(r["writer_us_per_msg"] for r in on)
    print(
        f"writer CPU per message (lowest round): off {a:.1f} us, on {b:.1f} us,"
        f" +{b - a:.1f} us ({b / a:.2f}x); rounds: "
        + ", ".join(
            f"{x['writer_us_per_msg']:.0f}/{y['writer_us_per_msg']:.0f}"
            for x, y in zip(off, on, strict=True)
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=5, help="messages per accept transaction")
    p.add_argument("--hook-batch", type=int, default=50, help="webhooks per claim/record")
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=os.environ.get("TMPDIR"), help="where the queues go")
    args = p.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.rounds):  # alternately, so that both meet the same disturbances
        runs["off"].append(measure(False, args))
        runs["on"].append(measure(True, args))
    report(runs, args)


if __name__ == "__main__":
    main()

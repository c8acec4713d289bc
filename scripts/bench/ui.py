"""The dashboard at scale, on SQLite.

``fill PATH``: a store of ``--messages`` messages (default 1,000,000) made through the
store's own bulk path (Store.enqueue, the writer's multi-row inserts; no SMTP), spread over
30 days, 20,000 recipients and 2,000 senders, with tags, ``--jobs`` jobs of 20,000
messages each, and ``--finished`` of them claimed and recorded (sent, deferred, bounced)
as the delivery loop does. An admin key ``bench-ui`` is made; its key is written to
PATH.key.

``measure PATH``: the relay on that store (delivery off), logged in with that key; every
page and each message search is fetched ``--runs`` times; the median and worst times, and
the floor of a request that does no work (/healthz) in the same harness.

Every number is one run on this machine, with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

from bench import ROOT, use_checkout

use_checkout(children=True)
sys.path.insert(0, str(ROOT))  # measure runs the relay with the tests' RelayRunner

from mailgate.credentials import create_key  # noqa: E402
from mailgate.ids import new_id  # noqa: E402
from mailgate.models import DeliveryStatus  # noqa: E402
from mailgate.store import DeliveryUpdate, NewJob, NewMessage, Store  # noqa: E402

BATCH = 2000
JOB_SIZE = 20_000
DAYS = 30


def message(i: int, at: float, job_id: str | None = None) -> NewMessage:
    rcpt = f"user{i % 20_000}@dest{i % 50}.test"
    subject = f"Order {i} shipped" if i % 3 else f"Weekly news {i % 52}"
    raw = (
        f"From: app{i % 2000}@example.com\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nHello {i}\r\n"
    ).encode()
    return NewMessage(
        id=new_id(),
        created_at=at,
        sender=f"app{i % 2000}@example.com",
        recipients=(rcpt,),
        raw=raw,
        subject=subject,
        source="http",
        # 1 in 10,000 also carries "vip": a tag that matches almost nothing.
        tags=(("orders",) if i % 3 else ("news",)) + (("vip",) if i % 10_000 == 7 else ()),
        job_id=job_id,
    )


async def fill(args: argparse.Namespace) -> None:
    path = Path(args.path).resolve()
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    start = time.time() - DAYS * 86400
    step = DAYS * 86400 / args.messages
    began = time.monotonic()
    job_every = args.messages // (args.jobs + 1) if args.jobs else 0
    i = 0
    pending: set[asyncio.Task[None]] = set()
    while i < args.messages:
        if job_every and i // job_every != (i - BATCH) // job_every and i // job_every <= args.jobs:
            job = NewJob(new_id(), "", "http", f"campaign-{i}", JOB_SIZE, start + i * step)
            batch = [message(i + k, start + (i + k) * step, job.id) for k in range(JOB_SIZE)]
            await store.enqueue(batch, job=job)
            i += JOB_SIZE
            continue
        n = min(BATCH, args.messages - i)
        batch = [message(i + k, start + (i + k) * step) for k in range(n)]
        task = asyncio.create_task(store.enqueue(batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if len(pending) >= 8:  # a few in flight: the writer commits them as a group
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        i += n
        if i % 100_000 < BATCH:
            print(f"{i} messages, {i / (time.monotonic() - began):.0f}/s", flush=True)
    await asyncio.gather(*pending)
    done = 0
    outcomes = [
        (DeliveryStatus.SENT, "250 2.0.0 ok", "sent"),
        (DeliveryStatus.DEFERRED, "451 4.7.1 try later", "deferred"),
        (DeliveryStatus.BOUNCED, "550 5.1.1 no such user", "bounced"),
    ]
    while done < args.finished:
        now = time.time()
        claimed = await store.claim("bench:ui", now, 1000, now + 900)
        if not claimed:
            break
        updates = []
        for m in claimed:
            for c in m.deliveries:
                status, reply, event = random.choices(outcomes, weights=(80, 15, 5))[0]
                nxt = now + 3600 if status is DeliveryStatus.DEFERRED else None
                updates.append(
                    DeliveryUpdate(m.id, c.rcpt_idx, c.recipient, status, 1, nxt, "p", reply, event)
                )
        # Recorded a few seconds after each message came in, so the events spread over
        # the 30 days as a steady relay's do (not 1,000,000 in the last hour).
        await store.record("bench:ui", claimed[0].created_at + 5, updates)
        done += len(claimed)
    key = await create_key(store, "bench-ui", "admin")
    Path(str(path) + ".key").write_text(key)
    await store.close()
    print(f"{args.messages} messages ({done} finished) in {time.monotonic() - began:.0f} s")


def measure(args: argparse.Namespace) -> None:
    import httpx
    from tests.conftest import RelayRunner, build_settings

    path = Path(args.path).resolve()
    key = Path(str(path) + ".key").read_text().strip()
    tmp = path.parent / "bench-ui-relay"
    settings = build_settings(
        tmp, database={"url": f"sqlite:///{path}"}, delivery={"enabled": False}
    )
    relay = RelayRunner(settings).start()
    try:
        client = httpx.Client(base_url=relay.http_url, timeout=30, follow_redirects=False)
        form = client.get("/ui/login")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = client.post("/ui/login", data={"key": key, "csrf": csrf, "next": "/ui/"})
        assert answer.status_code == 303, answer.text
        newest = client.get("/ui/messages").text
        some_id = newest.split('href="/ui/messages/', 1)[1].split('"', 1)[0]
        job = client.get("/ui/jobs").text.split("/ui/messages?job=", 1)
        job_id = job[1].split('"', 1)[0] if len(job) > 1 else ""
        deep = client.get("/ui/messages?before=" + f"{time.time() - 20 * 86400!r}_z")
        assert deep.status_code == 200
        pages = {
            # No work at all: the round trip's own cost in this harness (client and relay
            # in one process, over loopback), to subtract from the others.
            "floor (/healthz)": "/healthz",
            "overview": "/ui/",
            "overview.json": "/ui/overview.json",
            "messages (newest)": "/ui/messages",
            "messages (page 20 days back)": f"/ui/messages?before={time.time() - 20 * 86400!r}_z",
            "message detail": f"/ui/messages/{some_id}",
            "jobs": "/ui/jobs",
            "templates": "/ui/templates",
            "webhooks": "/ui/webhooks",
            "suppressions": "/ui/suppressions",
            "keys": "/ui/keys",
            "captured": "/ui/captured",
        }
        searches = {
            "search recipient": "/ui/messages?to=user123@dest23.test",
            "search sender": "/ui/messages?from=app77@example.com",
            "search status bounced": "/ui/messages?status=bounced",
            "search tag news": "/ui/messages?tag=news",
            "search tag vip (1 in 10,000)": "/ui/messages?tag=vip",
            "search tag (no match)": "/ui/messages?tag=nosuchtag",
            "search date range (1 day)": "/ui/messages?since=2000-01-01&until="
            + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 15 * 86400)),
            "search job": f"/ui/messages?job={job_id}",
            "search subject (common)": "/ui/messages?subject=shipped",
            "search subject (rare)": "/ui/messages?subject=Weekly+news+7",
            "search subject (no match)": "/ui/messages?subject=invoice",
        }
        print(f"{'page':<32} {'median ms':>10} {'max ms':>8}")
        for name, url in {**pages, **searches}.items():
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                answer = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200, (url, answer.status_code)
            print(f"{name:<32} {statistics.median(times):>10.1f} {max(times):>8.1f}", flush=True)
    finally:
        relay.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench-ui", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fill")
    f.add_argument("path")
    f.add_argument("--messages", type=int, default=1_000_000)
    f.add_argument("--jobs", type=int, default=5)
    f.add_argument("--finished", type=int, default=200_000)
    m = sub.add_parser("measure")
    m.add_argument("path")
    m.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.command == "fill":
        asyncio.run(fill(args))
    else:
        measure(args)


if __name__ == "__main__":
    main()

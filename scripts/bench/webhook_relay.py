"""What webhooks cost the relay's own process (the event loop that also serves SMTP and
HTTP), in CPU time per webhook.

``python -m bench.webhook_relay`` (scripts/ on PYTHONPATH) queues ``--messages``
messages on a fresh SQLite store with one endpoint subscribed to message.queued, then
starts the relay's ``WebhookDispatcher`` in this process (the store's writer in a process
of its own, as under ``mailgate serve``; the webhook process as always) against a
receiver in another process that answers 200 at once, and measures this process's CPU
time (``time.process_time``) until every webhook is recorded as succeeded: the claims'
answers from the writer, the requests to and answers from the webhook process, the
outcomes. It waits on events, not by polling, so a slow run costs little more CPU; still,
on a busy machine the figure varies by a third (more wake-ups, fewer events each): it
prints the lowest and the median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import use_checkout

use_checkout()

from mailgate.config import load_settings  # noqa: E402
from mailgate.events.webhooks import FLUSH, WebhookDispatcher  # noqa: E402
from mailgate.ids import new_id  # noqa: E402
from mailgate.models import NewMessage  # noqa: E402
from mailgate.store import Store  # noqa: E402
from mailgate.store.schema import webhook_deliveries  # noqa: E402

SECRET = "whsec_" + "QmVuY2htYXJrIHNlY3JldCBvZiAzMiBieXRlcyEhISE="
BODY = b"Subject: webhook bench\r\nFrom: b@example.com\r\n\r\n" + b"x" * 900 + b"\r\n"

# A receiver that answers 200 to every request on a kept-alive connection.
RECEIVER = r"""
import asyncio, sys
class R(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0: return
            size = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length": size = int(v)
            if len(self.buf) < end + 4 + size: return
            self.buf = self.buf[end + 4 + size:]
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
async def main():
    s = await asyncio.get_running_loop().create_server(R, "127.0.0.1", 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def one_round(messages: int, tmp: Path, port: int) -> float:
    url = f"sqlite+aiosqlite:///{tmp / 'queue.db'}"
    settings = load_settings(
        data={
            "delivery": {"enabled": False},
            "webhooks": {
                "allow_private": True,
                "endpoints": [
                    {
                        "url": f"http://127.0.0.1:{port}/hooks",
                        "secret": SECRET,
                        "events": ["message.queued"],
                    }
                ],
            },
        },
        environ={},
    )
    store = await Store.open(url, writer_process=True)
    done = 0
    all_sent = asyncio.Event()

    def counted(status: str, ok: bool) -> None:
        nonlocal done
        done += ok
        if done == messages:
            all_sent.set()

    dispatcher = WebhookDispatcher(settings, store, "bench:1", on_outcome=counted)
    try:
        # The endpoint's row and subscription first, so that the accepts make webhooks.
        await store.webhooks.sync_config(
            [
                {
                    "id": e.id,
                    "url": e.url,
                    "events": list(e.events),
                    "secret": e.resolved_secret(),
                    "description": "",
                }
                for e in settings.webhooks.endpoints
            ],
            time.time(),
        )
        now = time.time()
        for start in range(0, messages, 500):
            batch = [
                NewMessage(new_id(), now, "b@example.com", ("r@dest.test",), BODY)
                for _ in range(min(500, messages - start))
            ]
            await store.enqueue(batch)
        t0 = time.process_time()
        await dispatcher.start()
        await all_sent.wait()
        # The last outcomes are recorded within the recorder's next round (50 ms).
        await asyncio.sleep(4 * FLUSH)
        spent = time.process_time() - t0
        assert await _pending(store) == 0
        return spent / messages
    finally:
        await dispatcher.stop()
        await store.close()


async def _pending(store: Store) -> int:
    from sqlalchemy import func, select

    async with store.engine.connect() as conn:
        q = select(func.count()).where(webhook_deliveries.c.status != "succeeded")
        return int((await conn.execute(q)).scalar_one())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        per = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                per.append(asyncio.run(one_round(args.messages, Path(tmp), port)))
        print(
            f"relay process CPU per webhook ({args.messages} webhooks, {args.rounds} rounds):"
            f" lowest {1e6 * min(per):.1f} us, median {1e6 * statistics.median(per):.1f} us"
        )
    finally:
        receiver.kill()
        receiver.wait()


if __name__ == "__main__":
    main()

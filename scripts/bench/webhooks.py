"""The webhook side of ``scripts/bench-smtp`` (scenarios ``paced-webhooks`` and
``paced-webhooks-dead``): a receiver in the orchestrator's process, and the report.

``paced-webhooks`` is ``paced-e2e`` with one endpoint subscribed to every event, so each
message makes two webhooks (message.queued and message.sent): at 500 messages/s that is
1,000 webhooks/s. The receiver answers 200 to each at once and notes when it came and the
event's own timestamp, so the report says whether delivery of webhooks kept up, how late
they were, and what they cost the accepts (p99 against ``paced-e2e`` of the same round).
``paced-webhooks-dead`` points the endpoint at a port that accepts connections and never
answers: the mail flow must not notice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

SECRET = "whsec_" + "QmVuY2htYXJrIHNlY3JldCBvZiAzMiBieXRlcyEhISE="  # 32 bytes


def webhook_toml(url: str) -> str:
    return (
        "\n[webhooks]\nallow_private = true\n"
        f'[[webhooks.endpoints]]\nurl = "{url}"\nsecret = "{SECRET}"\nevents = ["*"]\n'
    )


class _Receiving(asyncio.Protocol):
    def __init__(self, sink: WebhookSink) -> None:
        self._sink = sink
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._sink.connections += 1
        self._sink.transports.add(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._sink.transports.discard(self._transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._sink.dead:
            return  # a blackhole: takes the request, never answers
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(self._buf) < end + 4 + size:
                return
            body = self._buf[end + 4 : end + 4 + size]
            self._buf = self._buf[end + 4 + size :]
            self._sink.note(headers, body)
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


class WebhookSink:
    """Counts webhooks: ids, arrival times, lateness against the event's timestamp."""

    def __init__(self, *, dead: bool = False) -> None:
        self.dead = dead
        self.connections = 0
        self.transports: set[asyncio.Transport] = set()
        self.ids: set[str] = set()
        self.received = 0
        self.arrivals: list[float] = []
        self.late_ms: list[float] = []
        self.kinds: dict[str, int] = {}
        self.unsigned = 0
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> WebhookSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Receiving(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def note(self, headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        self.received += 1
        self.ids.add(headers.get("webhook-id", ""))
        if not headers.get("webhook-signature", "").startswith("v1,"):
            self.unsigned += 1
        event = json.loads(body)
        self.kinds[event["type"]] = self.kinds.get(event["type"], 0) + 1
        at = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        self.arrivals.append(now)
        self.late_ms.append((now - at) * 1000)

    async def wait_for(self, expected: int, timeout: float) -> float:
        """Seconds until ``expected`` distinct webhooks arrived (or the timeout)."""
        t0 = time.monotonic()
        while len(self.ids) < expected and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self.transports):
            transport.abort()


def _rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def webhook_stats(
    sink: WebhookSink, expected: int, start: float, end: float, waited: float
) -> dict[str, Any]:
    in_window = sum(1 for t in sink.arrivals if start <= t < end)
    return {
        "wh_expected": expected,
        "wh_received": sink.received,
        "wh_distinct": len(sink.ids),
        "wh_duplicates": sink.received - len(sink.ids),
        "wh_unsigned": sink.unsigned,
        "wh_rate": in_window / (end - start) if end > start else 0.0,
        "wh_late_p50": _rank(sink.late_ms, 50),
        "wh_late_p99": _rank(sink.late_ms, 99),
        "wh_kinds": dict(sorted(sink.kinds.items())),
        "wh_waited": waited,
        "wh_connections": sink.connections,
        "wh_dead": sink.dead,
    }


def print_webhook_details(x: dict[str, Any]) -> None:
    if x["wh_dead"]:
        print(
            f"  webhooks: endpoint never answers; it took {x['wh_connections']} connection(s) "
            f"and answered none (mail must not notice)"
        )
        return
    print(
        f"  webhooks: {x['wh_distinct']} distinct of {x['wh_expected']} expected "
        f"({x['wh_duplicates']} duplicates, {x['wh_unsigned']} unsigned) {x['wh_kinds']}; "
        f"{x['wh_rate']:.0f}/s in the window; event->received p50 {x['wh_late_p50']:.0f} ms, "
        f"p99 {x['wh_late_p99']:.0f} ms; all in {x['wh_waited']:.1f} s after the drain"
    )


def print_webhook_targets(sc: Any, base: Any, verdict: Any) -> None:
    """``sc``: a paced-webhooks scenario; ``base``: paced-e2e of the same round (or None)."""
    x = sc.extra
    p99 = sc.load.percentile_ms(99)
    if base is not None and base.load is not None:
        ref = base.load.percentile_ms(99)
        ratio = p99 / ref if ref else float("nan")
        what = "dead endpoint" if x["wh_dead"] else "webhooks on"
        print(
            f"  paced accept p99, {what} <= 1.5x without: {verdict(ratio <= 1.5)} "
            f"({p99:.2f} ms vs {ref:.2f} ms, {ratio:.2f}x)"
        )
        if x["wh_dead"]:
            plain, now = base.extra["delivered_rate"], x["delivered_rate"]
            print(
                f"  dead endpoint, mail delivered/s vs without: "
                f"{verdict(now >= 0.97 * plain)} ({now:.0f} vs {plain:.0f} msg/s)"
            )
    if not x["wh_dead"]:
        offered = 2 * (sc.load.rate or 0.0)
        ok = x["wh_distinct"] >= x["wh_expected"] and x["wh_rate"] >= 0.97 * offered
        print(
            f"  webhooks keep up ({offered:.0f}/s offered), none lost: {verdict(ok)} "
            f"({x['wh_rate']:.0f}/s, {x['wh_distinct']}/{x['wh_expected']})"
        )

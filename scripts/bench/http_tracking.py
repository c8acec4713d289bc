"""The ``tracking`` scenario's parts for bench-http: valid tokens and the GET requests.

The tokens are made the way the delivery process makes them, with the relay's own key
(read from its SQLite database after it made it) for messages the bench sent through the
API first, so every pixel and click request is one a real recipient's mail client would
make, and each records an event.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

from bench import HOST
from mailgate.events.tokens import Signer

CLICK_URL = "https://shop.example.com/item?id=42&ref=newsletter"
TRACKING_TARGET_RATE = 2000.0  # requests/s
TRACKING_TARGET_P99_MS = 20.0


def tracking_key(db: Path) -> bytes:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM settings WHERE name = 'tracking_key'").fetchone()
    if row is None:
        raise RuntimeError(f"{db}: no tracking key (is [http] public_url set?)")
    return base64.b64decode(row[0])


def recorded(db: Path) -> int:
    """Opened and clicked events in the database (after mailgate stopped: all written)."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE type IN ('opened', 'clicked')")
        return int(row.fetchone()[0])


def tokens(key: bytes, message_ids: list[str]) -> list[tuple[str, str]]:
    """(open token, click token) per message, recipient 0."""
    signer = Signer(key)
    return [(signer.open_token(m, 0), signer.click_token(m, 0, CLICK_URL)) for m in message_ids]


class TrackingFactory:
    """Alternate GETs of the open pixel (200) and a click (302), over the messages' tokens,
    with the headers a mail client sends."""

    def __init__(self, port: int, pairs: list[list[str]]) -> None:
        head = (
            f"HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "User-Agent: Mozilla/5.0 (bench-http tracking)\r\nAccept: */*\r\n\r\n"
        )
        self._requests = [
            (f"GET /t/o/{o} {head}".encode(), f"GET /t/c/{c} {head}".encode()) for o, c in pairs
        ]
        self.body_size = 0
        self.expect = 200

    def make(self, n: int) -> bytes:
        pixel, click = self._requests[(n // 2) % len(self._requests)]
        return pixel if n % 2 else click

    def expected(self, n: int) -> int:
        return 200 if n % 2 else 302

"""The SMTP load's messages: realistic text of a fixed size, built once and stamped with a
unique Message-ID each, so the client spends next to nothing on them. The prose lines
also fill the HTTP bench's send bodies."""

from __future__ import annotations

import email.utils
import secrets

WORDS = [
    *("relay", "queue", "durable", "commit", "sender", "recipient", "provider", "delivery"),
    *("backoff", "lease", "header", "message", "transport", "listener", "session", "envelope"),
    *("domain", "report", "invoice", "order", "shipment", "account", "password", "reset"),
    *("welcome", "newsletter", "receipt", "reminder", "notice", "weekly", "summary"),
]


def body_lines(count: int) -> list[str]:
    """Deterministic prose-like text lines (never starting with '.')."""
    lines = []
    for i in range(count):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(11)]
        lines.append(" ".join(words).capitalize() + ".")
    return lines


class MessageFactory:
    """Realistic size-byte messages with a unique Message-ID each, cheaply.

    The bytes around the Message-ID are built once; each message is three concatenations,
    so building messages costs the client next to nothing.
    """

    HEAD = (
        "From: Bench Sender <bench@example.com>\r\n"
        "To: Bench Recipient <rcpt@example.net>\r\n"
        "Subject: Your weekly mailgate benchmark summary\r\n"
        "Date: {date}\r\n"
        "Message-ID: <"
    )
    AFTER_ID = (
        "@bench.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    ID_LEN = 8 + 1 + 12  # token.counter, fixed width so every message has the same size

    def __init__(self, size: int) -> None:
        self._token = secrets.token_hex(4)
        head = self.HEAD.format(date=email.utils.formatdate(localtime=True))
        fixed = len(head) + self.ID_LEN + len(self.AFTER_ID)
        body = self._body(size - fixed)
        self._head = head.encode()
        self._tail = (self.AFTER_ID + body).encode() + b".\r\n"  # body ends with CRLF
        self.size = fixed + len(body)

    @classmethod
    def minimum_size(cls) -> int:
        """Headers plus a one-character body line."""
        date = email.utils.formatdate(localtime=True)
        return len(cls.HEAD.format(date=date)) + cls.ID_LEN + len(cls.AFTER_ID) + 3

    def _ident(self, n: int) -> str:
        return f"{self._token}.{n:012d}"

    @staticmethod
    def _body(budget: int) -> str:
        """Text lines filling ``budget`` bytes exactly (CRLF included), at least one line."""
        out: list[str] = []
        used = 0
        for line in body_lines(max(1, budget // 60 + 1)):
            if used + len(line) + 2 > budget:
                break
            out.append(line + "\r\n")
            used += len(line) + 2
        rest = budget - used - 2
        if rest > 0 or not out:
            filler = (" ".join(WORDS) * (rest // 200 + 1))[: max(rest, 1)].strip() or "x"
            filler = filler.ljust(max(rest, 1), "x")
            out.append(filler + "\r\n")
        return "".join(out)

    def make(self, n: int) -> bytes:
        """Message n, dot-terminated, ready to send after a 354."""
        return self._head + self._ident(n).encode() + self._tail

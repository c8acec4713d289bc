"""The HTTP bench's requests: each dialect's single send (native, MailSage, MessagePipe,
analyze) as prebuilt bytes with a fresh order number each, and the batches of 1000."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import HOST
from bench.message import body_lines

SEND_PATH = "/v1/messages/send"
BATCH_PATH = "/v1/messages/batch"
MAILSAGE_SEND_PATH = "/api/v1/emails/send"
MAILSAGE_BATCH_PATH = "/api/v1/emails/batch"
MESSAGEPIPE_SEND_PATH = "/email/send"
TEMPLATES_PATH = "/v1/templates"
BENCH_TEMPLATE = {"id": "bench-tpl", "name": "bench", "subject": "s", "text": "Hi {{ name }}"}
BATCH_SIZE = 1000  # the API's maximum, and what the target is about
SAMPLE_BYTES = 300  # of an error answer, kept as its sample
ANALYZE_PATH = "/v1/messages/analyze?dns=false"


def request_head(path: str, port: int, key: str, length: int, *, api_key: bool = False) -> bytes:
    """Request line and headers of a JSON POST; the body follows as is.

    ``api_key``: the key in ``x-api-key`` (MessagePipe's clients) instead of Bearer.
    """
    auth = f"x-api-key: {key}" if api_key else f"Authorization: Bearer {key}"
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        f"{auth}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {length}\r\n"
        "\r\n"
    ).encode()


@dataclass(frozen=True)
class SendKind:
    """One dialect's single send: where it goes, how the key travels, what success is."""

    path: str
    body: Callable[[str], dict[str, Any]]
    expect: int = 202
    api_key: bool = False


class SendFactory:
    """The same ~2 KB send request with a different order number each time, cheaply.

    The number is fixed-width, so the request bytes around it (headers included, with
    Content-Length) are built once and each request is a join of a few byte strings.
    """

    MARK = "@@@@@@@@@@@@"  # 12 characters, replaced by the request number

    def __init__(self, kind: SendKind, port: int, key: str) -> None:
        body = json.dumps(kind.body(self.MARK), separators=(",", ":")).encode()
        parts = body.split(self.MARK.encode())
        parts[0] = request_head(kind.path, port, key, len(body), api_key=kind.api_key) + parts[0]
        self._parts = parts
        self.body_size = len(body)
        self.expect = kind.expect

    def make(self, n: int) -> bytes:
        return f"{n:012d}".encode().join(self._parts)

    def expected(self, n: int) -> int:
        return self.expect


def send_body(order: str) -> dict[str, Any]:
    """What an application's transactional send looks like: both parts, tags, metadata."""
    lines = body_lines(9)
    html = "".join(f"<p>{line}</p>\n" for line in lines)
    text = "\n\n".join(lines)
    return {
        "from": "Bench Sender <bench@example.com>",
        "to": "Bench Recipient <rcpt@example.net>",
        "subject": f"Your order #{order} has shipped",
        "html": f"<html><body><h1>Order #{order}</h1>\n{html}</body></html>",
        "text": f"Order #{order}\n\n{text}",
        "tags": ["transactional", "orders", "bench"],
        "metadata": {"user_id": "usr_123", "order_id": order, "source": "bench-http"},
    }


def mailsage_send_body(order: str) -> dict[str, Any]:
    """The native send's content in MailSage's shape: one body (html, as it has markup),
    variables rendered into the subject; the sender is ``[compat] default_from``."""
    lines = body_lines(9)
    html = "".join(f"<p>{line}</p>\n" for line in lines)
    return {
        "recipient": {
            "email": "rcpt@example.net",
            "variables": {"name": "Bench Recipient", "order": order, "user_id": "usr_123"},
        },
        "subject": "Your order #{{ order }} has shipped",
        "body": f"<html><body><h1>Order #{order}</h1>\n{html}</body></html>",
    }


def messagepipe_send_body(order: str) -> dict[str, Any]:
    """MessagePipe's send: a template (``BENCH_TEMPLATE``), its variables, a subject."""
    return {
        "templateId": BENCH_TEMPLATE["id"],
        "to": "rcpt@example.net",
        "subject": f"Your order #{order} has shipped",
        "variables": {"name": f"Bench Recipient {order}", "order": order},
    }


def analyze_body(order: str) -> dict[str, Any]:
    """A newsletter-like message: sections with links and images, a text part, tags."""
    lines = body_lines(9)
    sections = "".join(
        f"<h2>Section {i}</h2><p>{line} <a href='https://example.com/p/{order}/{i}'>Read "
        f"more</a></p><img src='https://cdn.example.com/{i}.png' alt='picture {i}'>\n"
        for i, line in enumerate(lines * 3)
    )
    return {
        "from": "News <news@example.com>",
        "to": "Reader <rcpt@example.net>",
        "subject": f"Our news of the week, issue {order}",
        "html": f"<html><body><h1>Issue {order}</h1>{sections}</body></html>",
        "text": "\n\n".join(lines * 3),
        "tags": ["newsletter", "bench"],
        "headers": {"List-Unsubscribe": "<https://example.com/u/bench>"},
    }


SEND_KINDS = {
    "send": SendKind(SEND_PATH, send_body),
    "mailsage-send": SendKind(MAILSAGE_SEND_PATH, mailsage_send_body),
    "messagepipe-send": SendKind(MESSAGEPIPE_SEND_PATH, messagepipe_send_body, 201, True),
    "analyze": SendKind(ANALYZE_PATH, analyze_body, 200),
}


def recipient_variables(batch_no: int, size: int) -> dict[str, dict[str, str]]:
    """A batch's recipients, each with its own name and sign-in code."""
    return {
        f"user{batch_no:02d}.{i:04d}@example.net": {
            "name": f"User {batch_no}-{i}",
            "code": f"{(batch_no * 7919 + i * 104729) % 1_000_000:06d}",
        }
        for i in range(size)
    }


def batch_body(batch_no: int, size: int = BATCH_SIZE) -> bytes:
    """One batch: ``size`` recipients, each with its own name and code."""
    body = {
        "from": "Bench Sender <bench@example.com>",
        "subject": "Hi {{ name }}",
        "html": "<p>Hi {{ name }},</p><p>your sign-in code is <b>{{ code }}</b>.</p>",
        "text": "Hi {{ name }},\n\nyour sign-in code is {{ code }}.",
        "tags": ["batch", "bench"],
        "metadata": {"campaign": "bench-http"},
        "recipient_variables": recipient_variables(batch_no, size),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def mailsage_batch_body(batch_no: int, size: int = BATCH_SIZE) -> bytes:
    """The native batch's recipients and content in MailSage's shape (one html body)."""
    variables = recipient_variables(batch_no, size)
    body = {
        "recipients": [{"email": email, "variables": v} for email, v in variables.items()],
        "subject": "Hi {{ name }}",
        "body": "<p>Hi {{ name }},</p><p>your sign-in code is <b>{{ code }}</b>.</p>",
        "campaign_id": "bench-http",
    }
    return json.dumps(body, separators=(",", ":")).encode()

"""What a client may hold open on the HTTP listener, and the refusals it gets, against a
relay: a request the parser cannot read, a head too big, a head or a body that stops
arriving, a connection that sends nothing (ingress/http_protocol.py)."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest

from conftest import RelayRunner
from mailgate.ingress import http_protocol, http_server


def _connect(relay: RelayRunner) -> socket.socket:
    host, port = relay.http_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket) -> tuple[bytes, dict[str, Any] | None]:
    """Everything until the server closes: the status line, and the JSON body if any."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], json.loads(body) if body else None


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(http_protocol, "BODY_IDLE", 0.5)
    monkeypatch.setattr(http_server, "KEEP_ALIVE", 0.5)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_request_the_parser_cannot_read_gets_a_json_400(
    relay: RelayRunner, request_bytes: bytes
) -> None:
    with _connect(relay) as sock:
        sock.sendall(request_bytes)
        status, body = _answer(sock)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert body == {
        "error": {"code": "http_error", "message": "invalid HTTP request", "field": None}
    }


def test_a_head_over_the_limit_is_refused_431(relay: RelayRunner) -> None:
    with _connect(relay) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(100):  # 1 MB, a little at a time, never ending the header
                sock.sendall(b"a" * 10_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before all of it was sent
        status, body = _answer(sock)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert body is not None and body["error"]["code"] == "http_error"


def test_a_big_body_in_one_read_with_its_head_is_not_a_big_head(relay: RelayRunner) -> None:
    """The limit counts the head, not the body that arrives with it."""
    key = relay.create_key("app")
    text = "x" * 200_000
    body = json.dumps(
        {"from": "a@example.com", "to": "b@example.net", "subject": "s", "text": text}
    ).encode()
    with _connect(relay) as sock:
        sock.sendall(
            f"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _ = _answer(sock)
    assert status == b"HTTP/1.1 202 Accepted"


def test_a_head_not_whole_in_time_is_refused_408(limits: None, relay_factory: Any) -> None:
    relay = relay_factory()
    with _connect(relay) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: never ends
        started = time.monotonic()
        status, body = _answer(sock)
    assert status == b"HTTP/1.1 408 Request Timeout", status
    assert body is not None and body["error"]["code"] == "http_error"
    assert time.monotonic() - started < 5


def test_a_body_that_stops_arriving_ends_the_connection(
    limits: None, relay_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    relay = relay_factory()
    key = relay.create_key("app")
    with _connect(relay) as sock:
        sock.sendall(
            f"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed, no answer
    assert time.monotonic() - started < 5
    assert "request body stalled" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_connection_that_sends_nothing_is_closed(limits: None, relay_factory: Any) -> None:
    relay = relay_factory()
    with _connect(relay) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""
    assert time.monotonic() - started < 5

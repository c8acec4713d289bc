"""Story: hostile or broken clients; the relay answers, never crashes, never leaks internals."""

from __future__ import annotations

import random
import smtplib
import socket

import httpx


def session(port: int, payload: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.recv(1024)
        sock.sendall(payload)
        out = b""
        try:
            while len(out) < 1_000_000:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def still_serves(relay) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        assert c.sendmail("app@example.com", ["a@dest.test"], b"Subject: ok\r\n\r\nok\r\n") == {}


def test_garbage_commands_and_binary_data(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"idle_timeout": "500ms"})
    rng = random.Random(7)
    payloads = [
        b"\x00\xff\xfe" * 1000 + b"\r\n",
        b"EHLO " + b"x" * 5000 + b"\r\n",
        b"MAIL FROM:<" + b"a" * 2000 + b"@example.com>\r\n",
        b"HELO x\r\nMAIL FROM:<a@example.com> SIZE=notanumber\r\nQUIT\r\n",
        b"EHLO x\r\nAUTH PLAIN !!!!\r\nAUTH LOGIN\r\n*\r\nQUIT\r\n",
        b"EHLO x\r\nRCPT TO:<a@b.c>\r\nDATA\r\nQUIT\r\n",
        b"EHLO x\r\nSTARTTLS\r\nQUIT\r\n",
        b"\r\n\r\n\r\n" * 100 + b"QUIT\r\n",
        b"EHLO x\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n"
        + bytes(rng.randrange(256) for _ in range(20000))
        + b"\r\n.\r\nQUIT\r\n",
    ]
    payloads += [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)
    ]
    for payload in payloads:
        out = session(relay.port(), payload)
        assert b"Traceback" not in out and b"Error: (" not in out, out[:500]
    still_serves(relay)


def test_http_garbage(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("app")
    host, port = relay.http_url.removeprefix("http://").split(":")
    raw_requests = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{",
        b"POST /v1/messages/send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v1/messages?limit=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for raw in raw_requests:
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            sock.sendall(raw)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 500"), answer[:200]
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        for body in ["[]", "null", '"x"', "1e999999", '{"from": {"a": 1}}', "{" * 10000]:
            r = c.post(
                "/v1/messages/send", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code in (400, 422), (body[:20], r.status_code, r.text[:200])
            assert set(r.json()) == {"error"}
        assert c.get("/healthz").status_code == 200

"""Story: a client writes its whole session, then closes its sending side (``nc -N``,
``socat``, a script's ``shutdown(SHUT_WR)``); every command it sent still gets its reply.
aiosmtpd ended such a session at once: a message whose final dot came with QUIT was queued
without its 250, and the client, seeing no answer, would send it again."""

from __future__ import annotations

import socket
import time

MESSAGE = b"Subject: half\r\n\r\nhello\r\n.dots stay\r\n.\r\n"
ENVELOPE = b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n"


def half_closed(port: int, payload: bytes) -> tuple[bytes, float]:
    """The replies to ``payload`` sent in one write before the client's side is closed,
    and how long the relay took to close the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(1024).startswith(b"220")
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out, time.monotonic() - started


def codes(replies: bytes) -> list[str]:
    return [line[:3].decode() for line in replies.split(b"\r\n") if line[3:4] == b" "]


def queued(relay) -> list[dict]:  # type: ignore[no-untyped-def]
    return relay.call(relay.store.list_messages(limit=10))


def test_the_dot_and_quit_then_a_half_close_get_250_and_221(relay) -> None:  # type: ignore[no-untyped-def]
    replies, took = half_closed(relay.port(), b"EHLO c\r\n" + ENVELOPE + MESSAGE + b"QUIT\r\n")
    assert codes(replies) == ["250", "250", "250", "354", "250", "221"], replies
    assert took < 5
    (message,) = queued(relay)
    assert message["id"].encode() in replies.split(b"\r\n")[-3]


def test_without_quit_the_session_ends_after_the_last_reply(relay) -> None:  # type: ignore[no-untyped-def]
    replies, took = half_closed(relay.port(), b"EHLO c\r\n" + ENVELOPE + MESSAGE + b"NOOP\r\nNO")
    assert codes(replies) == ["250", "250", "250", "354", "250", "250"], replies
    assert took < 5  # not the idle timeout
    assert len(queued(relay)) == 1


def test_a_message_cut_short_by_the_close_is_not_queued(relay) -> None:  # type: ignore[no-untyped-def]
    replies, took = half_closed(relay.port(), b"EHLO c\r\n" + ENVELOPE + b"Subject: cut\r\n\r\n.")
    assert codes(replies) == ["250", "250", "250", "354"], replies
    assert took < 5
    assert queued(relay) == []
    with socket.create_connection(("127.0.0.1", relay.port()), timeout=10) as sock:
        assert sock.recv(1024).startswith(b"220")  # the relay still serves

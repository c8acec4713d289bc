"""Story: hostile or broken clients; the relay answers, never crashes, never leaks internals."""

from __future__ import annotations

import random
import re
import smtplib
import socket
import time

import httpx
import pytest


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


def test_every_reply_has_an_enhanced_status_code(relay) -> None:  # type: ignore[no-untyped-def]
    """RFC 2034: once ENHANCEDSTATUSCODES is advertised every reply carries one, aiosmtpd's
    own protocol errors included (all but the greeting, the EHLO answer and 3xx prompts)."""
    payload = (
        b"MAIL FROM:<app@example.com>\r\n"  # before EHLO
        b"EHLO x\r\n"
        b"NOOP\r\nRSET\r\nHELP\r\nVRFY a\r\nEXPN a\r\nFOO\r\nMAIL\r\n"
        b"RCPT TO:<a@dest.test>\r\nDATA\r\n"  # out of sequence
        b"MAIL FROM:<" + b"a" * 5000 + b"@example.com>\r\n"  # command line too long
        b"MAIL FROM:<app@example.com>\r\nMAIL FROM:<app@example.com>\r\n"  # nested
        b"RCPT TO:<a@dest.test>\r\nDATA x\r\nQUIT\r\n"
    )
    lines = session(relay.port(), payload).decode().split("\r\n")
    ehlo = [line for line in lines if line.startswith("250-")]
    assert ehlo and "250-ENHANCEDSTATUSCODES" in ehlo
    replies = [line for line in lines if line and not line.startswith("250-")]
    replies.remove(next(r for r in replies if r.startswith("250 HELP")))  # EHLO's last line
    assert len(replies) >= 15, replies
    for reply in replies:
        assert re.match(r"\d{3} [245]\.\d{1,3}\.\d{1,3} ", reply), reply
    assert replies[0].startswith("503 5.5.1 ")  # MAIL before EHLO
    assert "500 5.5.2 " in {r[:10] for r in replies}
    assert replies[-1] == "221 2.0.0 Bye"
    help_line = next(r for r in replies if "Supported commands" in r)
    for command in ("DATA", "EHLO", "HELO", "MAIL", "RCPT", "QUIT"):
        assert command in help_line.split(), help_line


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


def test_addresses_that_are_not_utf8_are_refused_at_mail_and_rcpt(relay) -> None:  # type: ignore[no-untyped-def]
    """aiosmtpd decodes such bytes to surrogates; accepted, they failed the message at DATA
    with 451 for ever after."""
    out = session(
        relay.port(),
        b"EHLO x\r\nMAIL FROM:<a\xff@example.com> SMTPUTF8\r\n"
        b"MAIL FROM:<app@example.com> SMTPUTF8\r\n"
        b"RCPT TO:<b\xfe@dest.test>\r\nRCPT TO:<b@d\xfeest.test>\r\n"
        b"RCPT TO:<\xc3\xa9t\xc3\xa9@dest.test>\r\nQUIT\r\n",
    ).decode()
    assert "553 5.1.7 " in out
    assert out.count("553 5.1.3 ") == 2
    assert out.count("250 2.1.5 ") == 1  # UTF-8 is fine (SMTPUTF8)
    still_serves(relay)


def test_json_with_lone_surrogates_is_a_400_naming_the_field(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("app")

    def body(rest: str) -> str:
        return '{"from": "app@example.com", "to": ["a@dest.test"], ' + rest + "}"

    cases = {
        body('"subject": "s\\udcff", "text": "t"'): "subject",
        body('"subject": "s", "text": "t", "headers": {"X-A": "\\ud800"}'): "headers.X-A",
        body('"subject": "s", "text": "t", "tags": ["ok", "\\udfff"]'): "tags[1]",
    }
    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        for content, field in cases.items():
            r = c.post("/v1/messages/send", content=content, headers=json_type)
            assert r.status_code == 400, (content, r.text)
            assert r.json()["error"]["code"] == "invalid_json"
            assert r.json()["error"]["field"] == field
        paired = body('"subject": "s \\ud83d\\ude00", "text": "t"')
        r = c.post("/v1/messages/send", content=paired, headers=json_type)
        assert r.status_code == 202, r.text
        assert r.json()["data"]["subject"] == "s \U0001f600"


def test_an_aborted_or_garbled_auth_gets_exactly_one_reply(relay) -> None:  # type: ignore[no-untyped-def]
    """A "*" or a non-base64 answer to a 334 challenge is one 501, not two: a pipelining
    client would take the second as the answer to its next command."""
    out = session(
        relay.port(),
        b"EHLO x\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n!!!\r\nAUTH PLAIN\r\n*\r\n"
        b"AUTH LOGIN YXBpa2V5\r\n*\r\nAUTH PLAIN !!!!\r\nNOOP\r\n",
    ).decode()
    answers = [line for line in out.split("\r\n") if line and not line.startswith("250-")]
    assert [a[:3] for a in answers] == [
        "250",  # EHLO's last line
        *("334", "501"),
        *("334", "501"),
        *("334", "501"),
        *("334", "501"),  # the password challenge after the initial username
        "501",
        "250",
    ], answers


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock, sock.recv(1024)


def _greeting_once_free(port: int) -> tuple[socket.socket, bytes]:
    """A 220 once the server has seen closed connections go (their close is asynchronous)."""
    deadline = time.monotonic() + 5
    while True:
        sock, greeting = _greeting(port)
        if greeting.startswith(b"220 ") or time.monotonic() > deadline:
            return sock, greeting
        sock.close()
        time.sleep(0.05)


def test_connections_beyond_the_limits_get_421_instead_of_the_greeting(relay_factory) -> None:  # type: ignore[no-untyped-def]
    # Loopback is not trusted here, so the per-client limit applies to it.
    relay = relay_factory(
        smtp={"max_connections_per_client": 2, "trusted_networks": ["10.0.0.0/8"]}
    )
    first, a = _greeting(relay.port())
    second, b = _greeting(relay.port())
    third, c = _greeting(relay.port())
    assert a.startswith(b"220 ") and b.startswith(b"220 ")
    assert c.startswith(b"421 4.7.0 Too many connections from your address"), c
    assert third.recv(1024) == b""  # and closed
    for sock in (first, third):
        sock.close()
    fourth, d = _greeting_once_free(relay.port())  # a slot is free again
    assert d.startswith(b"220 "), d
    second.close()
    fourth.close()


def test_trusted_clients_are_held_only_to_the_global_limit(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"max_connections": 3, "max_connections_per_client": 1})
    socks = [_greeting(relay.port()) for _ in range(4)]
    assert [g[:4] for _, g in socks] == [b"220 ", b"220 ", b"220 ", b"421 "]
    assert socks[3][1].startswith(b"421 4.7.0 Too many connections, try again later")
    for sock, _ in socks:
        sock.close()
    _greeting_once_free(relay.port())[0].close()
    still_serves(relay)


def test_a_template_with_nul_is_refused(relay) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL's text cannot hold NUL: stored, it was a 503 on every try."""
    key = relay.create_key("app")
    with httpx.Client(base_url=relay.http_url, headers={"x-api-key": key}) as c:
        for body, field in (
            ({"name": "n\x00", "subject": "s", "text": "t"}, "name"),
            ({"name": "n", "subject": "s", "html": "<b>\x00</b>"}, "html"),
        ):
            r = c.post("/v1/templates", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["error"] == {
                "code": "invalid_template",
                "message": f"{field}: NUL characters are not allowed",
                "field": field,
            }


def test_auth_without_argument_mid_transaction_or_too_long_is_a_reply_not_a_crash(
    relay,  # type: ignore[no-untyped-def]
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """AUTH with no mechanism is a 501, AUTH inside a mail transaction a 503 (RFC 4954 4),
    an answer to a challenge longer than a line a 500: the first and last were 451 with a
    traceback, the second was taken."""
    out = session(
        relay.port(),
        b"EHLO x\r\nAUTH\r\nMAIL FROM:<app@example.com>\r\nAUTH PLAIN AGFwaWtleQBrZXk=\r\n"
        b"RSET\r\nAUTH LOGIN\r\n" + b"A" * 1500 + b"\r\nNOOP\r\n",
    ).decode()
    answers = [line[:3] for line in out.split("\r\n") if line and not line.startswith("250-")]
    assert answers == ["250", "501", "250", "503", "250", "334", "500", "250"], out
    assert not [r for r in caplog.records if r.levelno >= 40], caplog.text
    still_serves(relay)


def test_encoded_words_in_an_address_are_not_decoded(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """RFC 2047 5: no encoded word may appear in an address. aiosmtpd's parser decoded
    them, so <r@=?utf-8?q?evil.test?=> was delivered to r@evil.test."""
    out = session(
        relay.port(),
        b"EHLO x\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<r@=?utf-8?q?evil.test?=>\r\n"
        b'RCPT TO:<"a b"@=?utf-8?q?evil.test?=>\r\nRCPT TO:<=?utf-8?q?x?= y@dest.test>\r\n'
        b"QUIT\r\n",
    ).decode()
    assert out.count("553 5.1.3 ") == 3, out
    literal = "=?utf-8?b?QUJD?=@dest.test"  # a plain dot-atom: taken as it is
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        assert c.sendmail("app@example.com", [literal], b"Subject: x\r\n\r\nx\r\n") == {}
    deadline = time.monotonic() + 10
    while not list((tmp_path / "maildir" / "new").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (path,) = (tmp_path / "maildir" / "new").iterdir()
    assert f"Delivered-To: {literal}".encode() in path.read_bytes()


@pytest.mark.parametrize(
    "data",
    [
        b"just a body line\r\nsecond: line\r\n",
        b" injected: continuation\r\nSubject: x\r\n\r\nb\r\n",
    ],
)
def test_a_message_not_starting_with_a_header_is_a_body(relay, tmp_path, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """Put right after the relay's own headers, a body's lines read as headers, and a line
    starting with a space continued the relay's last header (its Date: or Message-ID:)."""
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        assert c.sendmail("app@example.com", ["a@dest.test"], data) == {}
    deadline = time.monotonic() + 10
    while not list((tmp_path / "maildir" / "new").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (path,) = (tmp_path / "maildir" / "new").iterdir()
    head, _, body = path.read_bytes().partition(b"\r\n\r\n")
    assert body == data
    assert b"injected" not in head and b"line" not in head


def test_a_slow_message_is_not_cut_by_the_idle_timeout(relay_factory) -> None:  # type: ignore[no-untyped-def]
    """The idle timeout runs from the last bytes received, in DATA too (RFC 5321
    4.5.3.2.5): a message arriving over longer than the timeout, steadily, is taken."""
    relay = relay_factory(smtp={"idle_timeout": "1s"})
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.ehlo("x")
        assert c.mail("app@example.com")[0] == 250 and c.rcpt("a@dest.test")[0] == 250
        c.putcmd("data")
        assert c.getreply()[0] == 354
        c.send(b"Subject: slow\r\n\r\n")
        for n in range(6):
            time.sleep(0.4)
            c.send(b"line %d\r\n" % n)
        c.send(b".\r\n")
        assert c.getreply()[0] == 250


def test_a_reply_echoes_no_control_byte_of_the_command(relay) -> None:  # type: ignore[no-untyped-def]
    out = session(relay.port(), b"EHLO x\r\nNOOP\rX-INJ 250 fake\r\nBAD\x00CMD\r\nQUIT\r\n")
    replies = [line for line in out.split(b"\r\n") if line.startswith(b"500")]
    assert len(replies) == 2 and b"NOOP?X-INJ" in replies[0] and b"BAD?CMD" in replies[1], out
    assert b"\rX-INJ" not in out and b"\x00" not in out


def test_received_names_the_protocol_the_client_used(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """RFC 3848 and 6531: SMTP after HELO, ESMTP after EHLO, UTF8SMTP with SMTPUTF8."""
    cases = [
        ("helo", b"HELO x\r\n", b""),
        ("ehlo", b"EHLO x\r\n", b""),
        ("utf8", b"EHLO x\r\n", b" SMTPUTF8"),
    ]
    for name, greet, option in cases:
        out = session(
            relay.port(),
            greet
            + b"MAIL FROM:<app@example.com>"
            + option
            + b"\r\nRCPT TO:<"
            + name.encode()
            + b"@dest.test>\r\nDATA\r\nSubject: p\r\n\r\nx\r\n.\r\nQUIT\r\n",
        )
        assert b"250 2.0.0 Ok: queued" in out, out
    deadline = time.monotonic() + 10
    folder = tmp_path / "maildir" / "new"
    while len(list(folder.glob("*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    withs = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        rcpt = re.search(rb"Delivered-To: (\w+)@", data)[1].decode()  # type: ignore[index]
        withs[rcpt] = re.search(rb"\(mailgate\) with (\S+) id", data)[1].decode()  # type: ignore[index]
    assert withs == {"helo": "SMTP", "ehlo": "ESMTP", "utf8": "UTF8SMTP"}


def test_a_client_leaving_during_the_commit_leaves_a_line_in_the_log(relay, caplog) -> None:  # type: ignore[no-untyped-def]
    """The message may still be queued though the client was never told: the log says so
    (there was no line at all)."""
    import asyncio

    caplog.set_level("INFO")
    handler = relay.app.smtp._handler
    real = handler.acceptor.accept

    async def slow(sub):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5)
        return await real(sub)

    handler.acceptor.accept = slow
    try:
        with socket.create_connection(("127.0.0.1", relay.port()), timeout=5) as sock:
            sock.recv(1024)
            sock.sendall(
                b"EHLO x\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n"
                b"Subject: s\r\n\r\nx\r\n.\r\n"
            )
            time.sleep(0.2)  # in the commit
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        deadline = time.monotonic() + 5
        while "may be queued without the client knowing" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    finally:
        handler.acceptor.accept = real


def test_mail_may_carry_size_and_a_long_auth_parameter(relay) -> None:  # type: ignore[no-untyped-def]
    """RFC 1870 and 4954 lengthen MAIL by 26 and 500 octets: a 544-octet MAIL with SIZE=
    and AUTH= was 500 "line too long"."""
    line = b"MAIL FROM:<app@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<" + b"a" * 470
    line += b"@example.com>\r\n"
    assert 540 < len(line) < 1000
    out = session(relay.port(), b"EHLO x\r\n" + line + b"QUIT\r\n")
    assert b"250 2.1.0" in out and b"too long" not in out, out


def test_too_many_unknown_commands_end_with_a_421(relay) -> None:  # type: ignore[no-untyped-def]
    out = session(relay.port(), b"EHLO x\r\n" + b"BOGUS\r\n" * 6).decode()
    last = [line for line in out.split("\r\n") if line][-1]
    assert last.startswith("421 4.7.0 Too many unrecognized commands"), out


def test_auth_after_helo_is_out_of_sequence(relay) -> None:  # type: ignore[no-untyped-def]
    out = session(relay.port(), b"HELO x\r\nAUTH PLAIN\r\nQUIT\r\n").decode()
    assert "503 5.5.1 Error: send EHLO first" in out, out

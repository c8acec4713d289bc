"""Story: an application submits over SMTP; every policy and limit gets its exact reply."""

from __future__ import annotations

import base64
import smtplib
import socket
import time

import pytest

from mailgate import replies

MSG = b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: hello\r\n\r\nbody line\r\n"


def connect(relay, **kw) -> smtplib.SMTP:  # type: ignore[no-untyped-def]
    client = smtplib.SMTP("127.0.0.1", relay.port(), timeout=10, **kw)
    client.ehlo("client.test")
    return client


def queue_id_of(reply: bytes) -> str:
    text = reply.decode()
    assert text.startswith("2.0.0 Ok: queued as "), text
    return text.rsplit(" ", 1)[1]


def send_raw(client: smtplib.SMTP, sender: str, rcpts: list[str], data: bytes) -> tuple[int, bytes]:
    code, _ = client.mail(sender)
    assert code == 250
    for r in rcpts:
        code, msg = client.rcpt(r)
        assert code == 250, msg
    return client.data(data)


def test_ehlo_advertises_extensions(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    for ext in ("size", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8", "auth"):
        assert client.has_extn(ext), ext
    assert client.esmtp_features["size"] == str(25_000_000)
    assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
    client.quit()


def test_authenticated_submission_is_queued_and_delivered(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("app")
    client = connect(relay)
    client.login("apikey", key)
    code, reply = send_raw(client, "app@example.com", ["a@dest.test", "b@dest.test"], MSG)
    assert code == 250
    qid = queue_id_of(reply)
    client.quit()
    relay.wait_status(qid, lambda s: set(s.values()) == {"sent"})
    files = sorted((tmp_path / "maildir" / "new").iterdir())
    assert len(files) == 2
    raw = files[0].read_bytes()
    assert b"\r\nSubject: hello\r\n" in raw
    assert f"by relay.test (mailgate) with ESMTPA id {qid};".encode() in raw
    assert f"Message-ID: <{qid}@relay.test>".encode() in raw
    assert b"\r\nDate: " in raw
    types = [e["type"] for e in relay.events(qid)]
    assert types.count("queued") == 2 and types.count("sent") == 2
    msg = relay.message(qid)
    assert msg["credential"] == "key:app" and msg["subject"] == "hello"


def test_login_with_key_name_and_auth_login(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("billing")
    client = connect(relay)
    client.user, client.password = "billing", key
    code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
    assert code == 235
    code, _ = send_raw(client, "app@example.com", ["x@dest.test"], MSG)
    assert code == 250
    client.quit()


def test_plain_with_another_authorization_identity_is_refused(relay) -> None:  # type: ignore[no-untyped-def]
    """RFC 4616: "act as someone else" is refused (535), not ignored; the same identity
    twice, or none, is fine."""
    key = relay.create_key("billing")

    def plain(authzid: str, authcid: str) -> int:
        token = base64.b64encode(f"{authzid}\0{authcid}\0{key}".encode()).decode()
        client = connect(relay)
        try:
            return client.docmd("AUTH", f"PLAIN {token}")[0]
        finally:
            client.close()

    assert plain("someoneelse", "apikey") == 535
    assert plain("apikey", "apikey") == 235
    assert plain("APIKEY", "apikey") == 235  # the user name is matched in any case
    assert plain("", "billing") == 235


def test_auth_mechanism_in_lower_case_and_login_prompts(relay) -> None:  # type: ignore[no-untyped-def]
    """``auth plain`` works as ``AUTH PLAIN`` does (it was 504), and AUTH LOGIN asks for
    "Username:" and "Password:" (aiosmtpd's prompts ended in a NUL)."""
    key = relay.create_key("app")
    client = connect(relay)
    plain = base64.b64encode(f"\0apikey\0{key}".encode()).decode()
    assert client.docmd("auth", f"plain {plain}")[0] == 235
    client.quit()
    client = connect(relay)
    code, prompt = client.docmd("AUTH", "login")
    assert (code, base64.b64decode(prompt)) == (334, b"Username:")
    code, prompt = client.docmd(base64.b64encode(b"apikey").decode())
    assert (code, base64.b64decode(prompt)) == (334, b"Password:")
    assert client.docmd(base64.b64encode(key.encode()).decode())[0] == 235
    client.quit()


def test_no_auth_outside_trusted_networks_is_530(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"trusted_networks": []})
    client = connect(relay)
    code, msg = client.mail("app@example.com")
    assert (code, msg) == (530, b"5.7.0 Authentication required")
    client.quit()


def test_the_null_sender_is_refused_saying_so(relay) -> None:  # type: ignore[no-untyped-def]
    """MAIL FROM:<> is valid syntax: the refusal says what it is about (it claimed a bad
    address syntax)."""
    key = relay.create_key("app")
    client = connect(relay)
    client.login("apikey", key)
    code, msg = client.docmd("MAIL FROM:<>")
    assert (code, msg) == (553, replies.NULL_SENDER_REFUSED.line()[4:].encode())
    assert client.mail("app@example.com")[0] == 250  # the session goes on
    client.quit()


def test_trusted_network_may_send_without_auth(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    code, reply = send_raw(client, "app@example.org", ["a@dest.test"], MSG)
    assert code == 250
    qid = queue_id_of(reply)
    assert relay.message(qid)["credential"] == "network:127.0.0.1"
    client.quit()


def test_foreign_sender_domain_is_553(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("app")
    client = connect(relay)
    client.login("apikey", key)
    code, msg = client.mail("someone@gmail.com")
    assert code == 553 and msg.startswith(b"5.7.1 ")
    client.quit()


def test_key_restricted_to_a_domain(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("shop", domains=("example.org",))
    client = connect(relay)
    client.login("shop", key)
    code, msg = client.mail("app@example.com")
    assert code == 553 and msg.startswith(b"5.7.1 ")
    code, _ = client.mail("app@example.org")
    assert code == 250
    client.quit()


def test_wrong_password_535_then_421_after_three(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"trusted_networks": []})
    relay.create_key("app")
    client = connect(relay)
    bad = "AGFwcABub3BlLW5vcGUtbm9wZQ=="  # \0app\0nope-nope-nope
    for _ in range(2):
        code, msg = client.docmd("AUTH", f"PLAIN {bad}")
        assert (code, msg) == (535, b"5.7.8 Authentication credentials invalid")
    code, msg = client.docmd("AUTH", f"PLAIN {bad}")
    assert (code, msg[:5]) == (421, b"4.7.0")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_revoked_key_is_refused(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("old")
    assert relay.call(relay.store.keys.revoke("old", time.time()))
    client = connect(relay)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("apikey", key)
    client.close()


def test_read_scope_key_cannot_send(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("reader", scope="read")
    client = connect(relay)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("apikey", key)
    client.close()


def test_size_declared_at_mail_is_552(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"max_message_size": "1KB"})
    client = connect(relay)
    code, msg = client.mail("app@example.com", ["SIZE=5000"])
    assert code == 552 and msg.startswith(b"5.3.4")
    client.quit()


def test_oversized_data_is_552(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"max_message_size": "1KB"})
    client = connect(relay)
    body = MSG + b"x" * 70 + b"\r\n"
    code, msg = send_raw(client, "app@example.com", ["a@dest.test"], body * 20)
    assert code == 552 and msg.startswith(b"5.3.4")
    # The session goes on.
    code, _ = send_raw(client, "app@example.com", ["a@dest.test"], MSG)
    assert code == 250
    client.quit()


def test_too_many_recipients_is_452_for_the_extra(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"max_recipients": 3})
    client = connect(relay)
    client.mail("app@example.com")
    codes = [client.rcpt(f"r{i}@dest.test") for i in range(5)]
    assert [c for c, _ in codes] == [250, 250, 250, 452, 452]
    assert codes[3][1].startswith(b"4.5.3")
    code, reply = client.data(MSG)
    assert code == 250
    assert len(relay.message(queue_id_of(reply))["deliveries"]) == 3
    client.quit()


def test_a_repeated_recipient_is_queued_once(relay_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """To, Cc and Bcc may name one address twice (Django, smtplib's send_message): one
    delivery per address, case aside, as Postfix queues it; repeats do not count against
    max_recipients."""
    relay = relay_factory(smtp={"max_recipients": 2})
    client = connect(relay)
    client.mail("app@example.com")
    given = ["dup@dest.test", "dup@dest.test", "DUP@dest.test", "dup@DEST.TEST", "b@dest.test"]
    assert [client.rcpt(r)[0] for r in given] == [250] * 5
    code, reply = client.data(MSG)
    assert code == 250
    client.quit()
    qid = queue_id_of(reply)
    relay.wait_status(qid, lambda s: s == {"dup@dest.test": "sent", "b@dest.test": "sent"})
    assert len(list((tmp_path / "maildir" / "new").iterdir())) == 2


def test_line_over_998_octets_is_500(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    ok_line = b"y" * 998 + b"\r\n"
    code, _ = send_raw(client, "app@example.com", ["a@dest.test"], MSG + ok_line)
    assert code == 250
    code, msg = send_raw(client, "app@example.com", ["a@dest.test"], MSG + b"z" * 999 + b"\r\n")
    assert code == 500 and msg.startswith(b"5.5.2")
    code, msg = send_raw(client, "app@example.com", ["a@dest.test"], MSG + b"z" * 5000 + b"\r\n")
    assert code == 500 and msg.startswith(b"5.5.2")
    client.quit()


def test_more_than_50_received_headers_is_554(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    hops = b"".join(
        b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i) for i in range(51)
    )
    code, msg = send_raw(client, "app@example.com", ["a@dest.test"], hops + MSG)
    assert code == 554 and msg.startswith(b"5.4.6")
    code, _ = send_raw(
        client, "app@example.com", ["a@dest.test"], hops[: hops.index(b"Received: from h50")] + MSG
    )
    assert code == 250
    client.quit()


def raw_session(port: int, lines: list[bytes], timeout: float = 5.0) -> bytes:
    """Speak SMTP byte by byte, for what smtplib would clean up."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(lines))  # ends with QUIT: the server closes
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_bare_lf_is_normalised_and_cannot_smuggle(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = raw_session(
        relay.port(),
        [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<app@example.com>\r\n",
            b"RCPT TO:<a@dest.test>\r\n",
            b"DATA\r\n",
            b"Subject: lf\nFrom: app@example.com\n\nline one\nline two\r\n",
            # A smuggling attempt: <LF>.<LF> and <LF>.<CRLF> are not end of data.
            b"x\n.\nMAIL FROM:<evil@example.com>\r\n",
            b"y\n.\r\nRCPT TO:<victim@dest.test>\r\n",
            b".\r\n",
            b"QUIT\r\n",
        ],
    )
    replies = out.decode().split("\r\n")
    queued = [r for r in replies if r.startswith("250 2.0.0")]
    assert len(queued) == 1, replies
    qid = queued[0].rsplit(" ", 1)[1]
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
    (path,) = (tmp_path / "maildir" / "new").iterdir()
    raw = path.read_bytes()
    assert b"\nline one\r\nline two\r\n" in raw
    assert b"MAIL FROM:<evil@example.com>\r\n" in raw  # stayed message content
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"\n" not in body.replace(b"\r\n", b"")  # no bare LF left
    assert b"\r" not in body.replace(b"\r\n", b"")


def test_size_and_non_ascii_addresses_are_checked_at_mail_and_rcpt(relay) -> None:  # type: ignore[no-untyped-def]
    """SIZE takes ASCII digits only (RFC 1870: "²" raised inside the relay, a 451 and a
    traceback per MAIL); a non-ASCII address needs SMTPUTF8 on MAIL (RFC 6531 3.4)."""
    out = raw_session(
        relay.port(),
        [
            b"EHLO client.test\r\n",
            "MAIL FROM:<app@example.com> SIZE=\u00b2\r\n".encode(),
            "MAIL FROM:<app@example.com> SIZE=\u0661\u0662\r\n".encode(),
            "MAIL FROM:<\u00fcn\u00ee@example.com>\r\n".encode(),
            b"MAIL FROM:<app@example.com>\r\n",
            "RCPT TO:<\u00fc@b\u00fccher.example>\r\n".encode(),
            b"RSET\r\n",
            "MAIL FROM:<\u00fcn\u00ee@example.com> SMTPUTF8\r\n".encode(),
            "RCPT TO:<\u00fc@b\u00fccher.example>\r\n".encode(),
            b"QUIT\r\n",
        ],
    )
    codes = [line[:9] for line in out.decode().split("\r\n")[1:] if line[3:4] == " "]
    assert codes[1:] == [
        "501 5.5.4",
        "501 5.5.4",
        "553 5.6.7",
        "250 2.1.0",
        "553 5.6.7",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "221 2.0.0",
    ], out


def test_transactions_sent_in_one_write_are_each_read_whole(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """DATA takes all that has arrived at once: what follows its end goes back to the
    commands, so a client that writes several transactions at a time gets each queued."""
    transactions = [
        b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n"
        b"Subject: n%d\r\n\r\n..stuffed\r\nbody %d\r\n.\r\n" % (i, i)
        for i in range(3)
    ]
    out = raw_session(relay.port(), [b"EHLO client.test\r\n", *transactions, b"QUIT\r\n"])
    replies = out.decode().split("\r\n")
    queued = [r.rsplit(" ", 1)[1] for r in replies if r.startswith("250 2.0.0")]
    assert len(queued) == 3 and replies[-2] == "221 2.0.0 Bye", replies
    for qid in queued:
        relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
    bodies = sorted(
        p.read_bytes().split(b"\r\n\r\n", 1)[1] for p in (tmp_path / "maildir" / "new").iterdir()
    )
    assert bodies == [b".stuffed\r\nbody %d\r\n" % i for i in range(3)]


def test_idle_client_gets_421(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"idle_timeout": "300ms"})
    with socket.create_connection(("127.0.0.1", relay.port()), timeout=5) as sock:
        banner = sock.recv(1024)
        assert banner.startswith(b"220 ")
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"421 4.4.2"), data


def test_a_pooled_connection_may_noop_before_every_message(relay) -> None:  # type: ignore[no-untyped-def]
    """JavaMail and Symfony check a pooled connection with NOOP before reusing it: the
    1001st NOOP closed it (421) however many messages it had carried."""
    out = raw_session(relay.port(), [b"EHLO client.test\r\n", b"NOOP\r\n" * 1200, b"QUIT\r\n"])
    replies = out.decode().split("\r\n")
    assert replies.count("250 2.0.0 OK") == 1200 and "221 2.0.0 Bye" in replies


def test_each_command_restarts_the_idle_timeout(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(smtp={"idle_timeout": "400ms"})
    client = connect(relay)
    started = time.monotonic()
    for _ in range(8):  # 1.2 s of commands, each well within the timeout of the last
        time.sleep(0.15)
        assert client.noop()[0] == 250
    assert time.monotonic() - started > 1.0
    idle_from = time.monotonic()
    sock = client.sock
    assert sock is not None
    sock.settimeout(5)
    assert sock.recv(1024).startswith(b"421 4.4.2")
    waited = time.monotonic() - idle_from
    assert 0.3 < waited < 2.0, waited


def test_commit_failure_is_451_and_never_leaks(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    relay.call(relay.store.writer.stop())  # the queue can no longer commit
    code, msg = send_raw(client, "app@example.com", ["a@dest.test"], MSG)
    assert (code, msg) == (451, b"4.3.0 Queue temporarily unavailable, try again later")
    client.quit()


def test_bad_recipient_syntax(relay) -> None:  # type: ignore[no-untyped-def]
    client = connect(relay)
    client.mail("app@example.com")
    code, msg = client.rcpt("not-an-address")
    assert code == 553 and msg.startswith(b"5.1.3")
    client.rset()
    # A sender aiosmtpd's parser cannot read is refused as a sender (it said 5.1.3).
    # Nor an address whose ">" is missing, or with a parameter right after it.
    for sender in ("<app@example.com.>", "<@>", "<app@example.com", "<app@example.com>SIZE=10"):
        code, msg = client.docmd(f"MAIL FROM:{sender}")
        assert (code, msg) == (553, replies.SENDER_SYNTAX.line()[4:].encode()), sender
    client.mail("app@example.com")
    for rcpt in ("<u4@dest.test", '<"a b"@dest.test>SIZE=1'):
        code, msg = client.docmd(f"RCPT TO:{rcpt}")
        assert code == 553 and msg.startswith(b"5.1.3"), rcpt
    assert client.docmd('RCPT TO:<"a b"@dest.test>')[0] == 250
    client.quit()


def test_one_connection_can_send_more_than_a_thousand_messages(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory(delivery={"enabled": False})
    client = connect(relay)
    for _ in range(1010):
        code, _ = send_raw(client, "app@example.com", ["a@dest.test"], MSG)
        assert code == 250
    client.quit()


def test_mail_auth_parameter_is_accepted_and_ignored(relay) -> None:  # type: ignore[no-untyped-def]
    """RFC 4954 section 5: a server offering AUTH accepts MAIL FROM's AUTH= (Exim sends
    AUTH=<> once authenticated); it does not change who the sender is."""
    key = relay.create_key("exim")
    client = connect(relay)
    client.login("apikey", key)
    code, msg = client.mail("app@example.com", ["AUTH=<>", "SIZE=100"])
    assert (code, msg) == (250, b"2.1.0 Sender OK")
    assert client.rcpt("a@dest.test")[0] == 250
    code, reply = client.data(MSG)
    assert code == 250
    assert relay.message(queue_id_of(reply))["credential"] == "key:exim"
    client.rset()
    code, msg = client.mail("app@example.com", ["AUTH=someone+40example.org"])
    assert code == 250
    client.rset()
    # Parameters it does not know are still refused, with an enhanced status code.
    code, msg = client.mail("app@example.com", ["RET=HDRS"])
    assert (code, msg[:6]) == (555, b"5.5.4 ")
    client.quit()

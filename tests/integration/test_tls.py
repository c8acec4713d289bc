"""Story: clients submit over STARTTLS and implicit TLS; the relay speaks TLS upstream."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time

import pytest

from fakes.upstream import Upstream

MSG = b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: tls\r\n\r\nsecret\r\n"


@pytest.fixture
def tls_relay(relay_factory, tls_files):  # type: ignore[no-untyped-def]
    return relay_factory(
        smtp={
            "listen": ["127.0.0.1:0"],
            "implicit_tls_listen": ["127.0.0.1:0"],
            "tls_cert": tls_files["cert"],
            "tls_key": tls_files["key"],
            "trusted_networks": [],
            "auth_plaintext_loopback": False,
        }
    )


def test_auth_refused_before_starttls_then_works(tls_relay, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = tls_relay.create_key("app")
    client = smtplib.SMTP("127.0.0.1", tls_relay.port(), timeout=10)
    client.ehlo("client.test")
    assert client.has_extn("starttls")
    assert not client.has_extn("auth")  # not offered in clear text
    code, msg = client.docmd("AUTH", "PLAIN AGFwaWtleQB4")
    assert code == 538 and msg.startswith(b"5.7.11")
    client.starttls(context=tls_files["client_context"])
    client.ehlo("client.test")
    assert client.has_extn("auth") and not client.has_extn("starttls")
    client.login("apikey", key)
    assert client.sendmail("app@example.com", ["a@dest.test"], MSG) == {}
    client.quit()
    (path,) = _wait_files(tmp_path, 1)
    assert b" with ESMTPSA id " in path.read_bytes()


def test_a_client_refusing_the_certificate_is_no_error_of_the_relay(tls_relay, caplog) -> None:  # type: ignore[no-untyped-def]
    """An untrusted certificate (or a scanner) fails STARTTLS: logged at INFO without a
    traceback (it was an ERROR with two), and the relay goes on serving."""
    caplog.set_level("INFO", logger="mailgate")
    client = smtplib.SMTP("127.0.0.1", tls_relay.port(), timeout=10)
    client.ehlo("client.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context())
    client.close()
    deadline = time.monotonic() + 5
    while not any("STARTTLS from" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    with smtplib.SMTP("127.0.0.1", tls_relay.port(), timeout=10) as again:
        assert again.ehlo("client.test")[0] == 250


def test_implicit_tls_submission(tls_relay, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = tls_relay.create_key("app")
    port = tls_relay.port(implicit_tls=True)
    with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_files["client_context"], timeout=10) as c:
        c.ehlo("client.test")
        assert c.has_extn("auth") and not c.has_extn("starttls")
        c.login("app", key)
        assert c.sendmail("app@example.com", ["a@dest.test"], MSG) == {}
    (path,) = _wait_files(tmp_path, 1)
    assert b" with ESMTPSA id " in path.read_bytes()


def test_plain_connection_to_implicit_port_fails_cleanly(tls_relay) -> None:  # type: ignore[no-untyped-def]
    port = tls_relay.port(implicit_tls=True)
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError)):
        smtplib.SMTP("127.0.0.1", port, timeout=3)
    # The listener still serves TLS clients afterwards.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10) as c:
        assert c.noop()[0] == 250


def test_implicit_tls_connections_count_from_accept(relay_factory, tls_files) -> None:  # type: ignore[no-untyped-def]
    """Sockets on the implicit-TLS port that never finish a handshake count against the
    limits (they counted against none, for 60 s each) and end after idle_timeout."""
    relay = relay_factory(
        smtp={
            "implicit_tls_listen": ["127.0.0.1:0"],
            "tls_cert": tls_files["cert"],
            "tls_key": tls_files["key"],
            "trusted_networks": [],
            "listen": ["127.0.0.1:0"],
            "max_connections_per_client": 3,
            "idle_timeout": "1s",
        }
    )
    port = relay.port(implicit_tls=True)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
        assert extra.recv(100) == b""  # closed at once: one too many from this address
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP_SSL("127.0.0.1", port, context=tls_files["client_context"], timeout=5)
    for sock in silent:  # the handshake's time is up after idle_timeout
        assert sock.recv(100) == b""
        sock.close()
    with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_files["client_context"], timeout=10) as c:
        assert c.noop()[0] == 250
    # One limit for both ports: handshakes on 465 count against a client's 587 sessions
    # (each port let one client hold the whole limit), and a finished handshake is
    # counted once.
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    time.sleep(0.2)
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=5) as plain:
        assert plain.noop()[0] == 250  # the third
        with socket.create_connection(("127.0.0.1", relay.port()), timeout=5) as fourth:
            assert fourth.recv(200).startswith(b"421 4.7.0")
    for sock in silent:
        sock.close()
    time.sleep(0.2)
    tls = tls_files["client_context"]
    opened = [smtplib.SMTP_SSL("127.0.0.1", port, context=tls, timeout=10) for _ in range(3)]
    assert [c.noop()[0] for c in opened] == [250, 250, 250]
    for c in opened:
        c.quit()


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_upstream_starttls_with_verified_certificate(relay_factory, tls_files, chunking) -> None:  # type: ignore[no-untyped-def]
    with Upstream(tls_context=tls_files["server_context"], chunking=chunking) as up:
        relay = relay_factory(
            providers=[
                {
                    "name": "up",
                    "kind": "smtp",
                    "host": "localhost",
                    "port": up.port,
                    "tls": "starttls",
                    "ca_file": tls_files["ca_file"],
                }
            ]
        )
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
            assert client.sendmail("app@example.com", ["a@dest.test"], MSG) == {}
        (got,) = up.wait_for(1)
        assert got.rcpt_tos == ["a@dest.test"]
        assert got.data.endswith(MSG.split(b"\r\n\r\n", 1)[1])
        assert up.bdat_transactions == (1 if chunking else 0)


def test_upstream_with_untrusted_certificate_is_deferred(relay_factory, tls_files) -> None:  # type: ignore[no-untyped-def]
    with Upstream(tls_context=tls_files["server_context"]) as up:
        relay = relay_factory(
            providers=[
                {
                    "name": "up",
                    "kind": "smtp",
                    "host": "localhost",
                    "port": up.port,
                    "tls": "starttls",
                }
            ]
        )
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
            client.sendmail("app@example.com", ["a@dest.test"], MSG)
        qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
        relay.wait_status(qid, lambda s: s == {"a@dest.test": "deferred"})
        assert up.received == []


def _wait_files(tmp_path, n: int):  # type: ignore[no-untyped-def]
    import time

    folder = tmp_path / "maildir" / "new"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = sorted(folder.iterdir()) if folder.exists() else []
        if len(files) >= n:
            return files
        time.sleep(0.05)
    raise AssertionError("maildir delivery did not happen")


def test_starttls_inside_tls_is_refused_and_the_session_goes_on(tls_relay, tls_files) -> None:  # type: ignore[no-untyped-def]
    """RFC 3207 4: no second STARTTLS. It was answered 220 and a handshake inside the
    first began, and the connection died."""
    client = smtplib.SMTP("127.0.0.1", tls_relay.port(), timeout=10)
    client.ehlo("client.test")
    client.starttls(context=tls_files["client_context"])
    client.ehlo("client.test")
    code, text = client.docmd("STARTTLS")
    assert (code, text[:5]) == (554, b"5.5.1"), text
    assert client.noop()[0] == 250
    client.quit()

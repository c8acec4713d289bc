"""DKIM: signatures made by DkimSigner verify with dkimpy's verifier, for RSA and Ed25519."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtplib.protocol import normalize_message_line_endings
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed

from mailgate.cli import main
from mailgate.config import Settings, load_settings
from mailgate.delivery.dkim import (
    DkimKey,
    DkimKeyError,
    DkimSigner,
    _relaxed_body,
    dns_record_name,
    dns_txt_strings,
    generate_key,
    load_private_key,
)
from mailgate.exceptions import ConfigError

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)

DnsFunc = Callable[..., bytes | None]


class Keys:
    """Keys generated once per test module (RSA generation takes ~50 ms), with their TXT."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.txt: dict[bytes, bytes] = {}
        self.paths: dict[str, Path] = {}
        for selector, kind in (("rsa1", "rsa"), ("ed1", "ed25519")):
            pem, txt = generate_key(kind)  # type: ignore[arg-type]
            path = directory / f"{selector}.pem"
            path.write_bytes(pem)
            self.paths[selector] = path
            self.txt[dns_record_name(selector, "example.com").encode()] = txt.encode()

    def key(self, selector: str) -> DkimKey:
        return DkimKey.load("example.com", selector, self.paths[selector])

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        return self.txt.get(name)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("dkim"))


def verify(message: bytes, dnsfunc: DnsFunc, idx: int = 0) -> bool:
    """dkimpy's verifier on signature ``idx`` (0 = topmost), False on any failure."""
    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def tags(header: bytes) -> dict[bytes, bytes]:
    """The tag=value pairs of one DKIM-Signature header (unfolded, whitespace removed)."""
    value = header.split(b":", 1)[1]
    return {k: re.sub(rb"\s+", b"", v) for k, v in dkim.util.parse_tag_value(value).items()}


def signatures(header_block: bytes) -> list[bytes]:
    return [b"DKIM-Signature:" + part for part in header_block.split(b"DKIM-Signature:")[1:]]


# ---------------------------------------------------------------- sign + verify


@pytest.mark.parametrize(
    ("selector", "algorithm"), [("rsa1", b"rsa-sha256"), ("ed1", b"ed25519-sha256")]
)
def test_sign_verifies(keys: Keys, selector: str, algorithm: bytes) -> None:
    signer = DkimSigner([keys.key(selector)], clock=lambda: 1_700_000_000.5)
    header = signer.sign(MESSAGE, "alice@example.com")
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    t = tags(header)
    assert t[b"a"] == algorithm
    assert t[b"c"] == b"relaxed/relaxed"
    assert (t[b"d"], t[b"s"], t[b"t"]) == (b"example.com", selector.encode(), b"1700000000")
    assert b"l" not in t
    assert verify(header + MESSAGE, keys.dnsfunc)


def test_signed_header_list_is_over_signed(keys: Keys) -> None:
    message = b"Reply-To: r@example.com\r\nX-Mailer: x\r\n" + MESSAGE
    t = tags(DkimSigner([keys.key("rsa1")]).sign(message, ""))
    assert t[b"h"].split(b":") == [
        b"from", b"from", b"to", b"to", b"subject", b"subject", b"date", b"date",
        b"message-id", b"message-id", b"mime-version", b"mime-version",
        b"content-type", b"content-type", b"reply-to", b"reply-to",
    ]  # fmt: skip


def test_dual_signing_rsa_first_both_verify(keys: Keys) -> None:
    signer = DkimSigner([keys.key("ed1"), keys.key("rsa1")])
    header = signer.sign(MESSAGE, "alice@example.com")
    sigs = signatures(header)
    assert [tags(s)[b"a"] for s in sigs] == [b"rsa-sha256", b"ed25519-sha256"]
    signed = header + MESSAGE
    assert verify(signed, keys.dnsfunc, 0)
    assert verify(signed, keys.dnsfunc, 1)


def test_eight_bit_body_and_folded_headers(keys: Keys) -> None:
    message = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@EXAMPLE.com>\r\n"
        b"To: one@example.net, two@example.net, three@example.net, four@example.net,\r\n"
        b"\tfive@example.net,   six@example.net\r\n"
        b"Subject: a long subject that was folded by the mail user agent because it\r\n"
        b" is longer than seventy-eight   columns\r\n"
        b"List-Unsubscribe: <https://example.com/u/" + b"x" * 300 + b">\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + "Grüße, 日本語, ✓  \r\n\r\nline two\t \r\n\r\n\r\n".encode()
    )
    signer = DkimSigner([keys.key("rsa1"), keys.key("ed1")])
    signed = signer.sign(message, "j@example.com") + message
    assert verify(signed, keys.dnsfunc, 0)
    assert verify(signed, keys.dnsfunc, 1)
    for sig in signatures(signed.split(b"\r\n\r\n")[0]):
        assert b"list-unsubscribe-post:list-unsubscribe-post" in tags(sig)[b"h"]


def test_adding_a_second_signed_header_breaks_the_signature(keys: Keys) -> None:
    signed = DkimSigner([keys.key("rsa1"), keys.key("ed1")]).sign(MESSAGE, "") + MESSAGE
    head, body = signed.split(b"\r\n\r\n", 1)
    for idx in (0, 1):
        assert verify(signed, keys.dnsfunc, idx)
        # at the bottom of the header (where a naive verifier would look) and at the top
        assert not verify(head + b"\r\nSubject: Pay now\r\n\r\n" + body, keys.dnsfunc, idx)
        assert not verify(b"To: eve@example.org\r\n" + signed, keys.dnsfunc, idx)
        assert not verify(head + b"\r\nFrom: ceo@example.com\r\n\r\n" + body, keys.dnsfunc, idx)
        # unsigned fields may be added in transit
        assert verify(b"X-Spam-Score: 0\r\nReceived: by mx\r\n" + signed, keys.dnsfunc, idx)
        assert verify(head + b"\r\nX-Tag: x\r\n\r\n" + body, keys.dnsfunc, idx)


def test_changed_body_or_subject_fails(keys: Keys) -> None:
    signed = DkimSigner([keys.key("rsa1")]).sign(MESSAGE, "") + MESSAGE
    assert not verify(signed.replace(b"Hello Bob.", b"Hello Eve."), keys.dnsfunc)
    assert not verify(signed.replace(b"Subject: Hello", b"Subject: Hellp"), keys.dnsfunc)
    assert not verify(signed + b"appended\r\n", keys.dnsfunc)  # no l= tag


def test_signature_holds_for_the_line_ends_smtp_sends(keys: Keys) -> None:
    """aiosmtpd keeps a client's bare LF/CR; aiosmtplib sends them as CRLF (and adds a final
    CRLF): the signature must verify on what the receiver gets."""
    raw = MESSAGE.replace(b"\r\n", b"\n").replace(b"Hello Bob.\n", b"Hello\rBob.  \n\nend")
    header = DkimSigner([keys.key("rsa1"), keys.key("ed1")]).sign(raw, "")
    wire = normalize_message_line_endings(header + raw)
    assert wire.endswith(b"end\r\n") and b"Hello\r\nBob." in wire
    assert verify(wire, keys.dnsfunc, 0)
    assert verify(wire, keys.dnsfunc, 1)


def test_relaxed_body_matches_dkimpy() -> None:
    rng = random.Random(6376)
    pieces = [b"a", b"xyz", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n\r\n", "é".encode()]
    bodies = [b"", b"\r\n", b"\r\n\r\n", b" \r\n", b"\t\r\n\r\n", b"a", b"a \t"]
    bodies += [b"".join(rng.choices(pieces, k=rng.randrange(1, 40))) for _ in range(3000)]
    for body in bodies:
        body = body if body.endswith(b"\r\n") or not body else body + b"\r\n"  # as on the wire
        assert _relaxed_body(body) == Relaxed.canonicalize_body(body), body


# ---------------------------------------------------------------- which domain signs


@pytest.mark.parametrize(
    "from_header",
    [
        b"From: a@example.org\r\n",  # not configured
        b"From: a@sub.example.com\r\n",  # exact match only, no parent fallback
        b"From: a@example.com.evil.test\r\n",
        b"From: undisclosed-recipients:;\r\n",
        b"From: a@example.com\r\nFrom: b@example.com\r\n",  # RFC 5322: exactly one From
        b"From: a@example.com, b@example.org\r\n",  # two domains: ambiguous
        b"",  # no From at all
    ],
)
def test_no_signature(keys: Keys, from_header: bytes) -> None:
    message = from_header + b"To: b@example.net\r\nSubject: s\r\n\r\nbody\r\n"
    # the envelope sender never selects the domain
    assert DkimSigner([keys.key("rsa1")]).sign(message, "bounce@example.com") == b""


def test_from_domain_match_is_case_insensitive(keys: Keys) -> None:
    message = b'From: "Ops, Team" <Ops@Example.COM.>\r\nSubject: s\r\n\r\nbody\r\n'
    header = DkimSigner([keys.key("ed1")]).sign(message, "")
    assert tags(header)[b"d"] == b"example.com"
    assert tags(header)[b"h"] == b"from:from:subject:subject"
    assert verify(header + message, keys.dnsfunc)


def test_malformed_header_is_not_signed(keys: Keys) -> None:
    assert DkimSigner([keys.key("rsa1")]).sign(b"bad header line\r\n\r\nx\r\n", "") == b""
    assert DkimSigner([]).sign(MESSAGE, "") == b""


def test_sign_async(keys: Keys) -> None:
    signer = DkimSigner([keys.key("rsa1")])
    header = asyncio.run(signer.sign_async(MESSAGE, "alice@example.com"))
    assert verify(header + MESSAGE, keys.dnsfunc)


def test_signing_processes_sign_and_survive_a_killed_worker(keys: Keys) -> None:
    """Signatures from the signing processes verify (both keys: the workers load the same
    files); a killed worker costs no signature, and new workers take over."""
    signer = DkimSigner([keys.key("rsa1"), keys.key("ed1")])

    async def scenario() -> list[bytes]:
        await signer.start_processes(1)
        try:
            workers = signer._processes
            assert workers is not None
            first = await signer.sign_async(MESSAGE, "alice@example.com")
            (pid,) = workers.pids()
            os.kill(pid, signal.SIGKILL)
            after_kill = await signer.sign_async(MESSAGE, "alice@example.com")
            for _ in range(100):  # a new worker is started in the background
                if workers.pids() != [pid]:
                    break
                await asyncio.sleep(0.1)
            (new_pid,) = workers.pids()
            assert new_pid != pid
            again = await signer.sign_async(MESSAGE, "alice@example.com")
            return [first, after_kill, again]
        finally:
            await signer.close()

    for header in asyncio.run(scenario()):
        assert len(signatures(header)) == 2
        assert verify(header + MESSAGE, keys.dnsfunc, 0)
        assert verify(header + MESSAGE, keys.dnsfunc, 1)


# ---------------------------------------------------------------- keys


def test_rsa_1024_is_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pem"
    path.write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(DkimKeyError, match=r"small\.pem: RSA key has 1024 bits.*at least 2048"):
        load_private_key(path)


def _pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    enc: serialization.KeySerializationEncryption | None = None,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        enc or serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read DKIM key"),
        (b"not a key\n", "not a DKIM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a usable PEM"),
        (
            _pem(ec.generate_private_key(ec.SECP256R1())),
            "not an RSA or Ed25519 key",
        ),
        (
            _pem(
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                enc=serialization.BestAvailableEncryption(b"pw"),
            ),
            "encrypted",
        ),
    ],
)
def test_key_load_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "broken.dkim.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DkimKeyError) as info:
        load_private_key(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_a_bad_key_in_the_config_names_the_file_and_the_domain(tmp_path: Path) -> None:
    """check-config said "/etc/hostname: not a DKIM private key", naming neither relay.toml
    nor which domain's key it was."""
    bad = tmp_path / "hostname"
    bad.write_text("host\n")
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[domains]]\nname = "example.com"\ndkim_selector = "s1"\ndkim_key = "{bad}"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path / "m"}"\n'
    )
    with pytest.raises(DkimKeyError) as info:
        DkimSigner.from_settings(load_settings(config, environ={}))
    assert str(info.value).startswith(
        f"{config}: [[domains]] example.com (selector s1): {bad}: not a DKIM private key"
    )


def test_pkcs1_and_dknewkey_formats_load(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = tmp_path / "pkcs1.pem"
    pkcs1.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert isinstance(load_private_key(pkcs1), rsa.RSAPrivateKey)
    # dknewkey --ktype ed25519 writes the base64 32-byte seed; dkimpy signs with it directly
    seed = base64.b64encode(bytes(range(32)))
    (tmp_path / "ed.key").write_bytes(seed + b"\n")
    ours = DkimKey.load("example.com", "ed", tmp_path / "ed.key")
    txt = {b"ed._domainkey.example.com.": ours.txt_value().encode()}
    theirs = dkim.sign(
        MESSAGE,
        b"ed",
        b"example.com",
        seed,
        signature_algorithm=b"ed25519-sha256",
        canonicalize=(b"relaxed", b"relaxed"),
    )
    assert verify(theirs + MESSAGE, lambda name, timeout=5: txt.get(name))
    assert verify(DkimSigner([ours]).sign(MESSAGE, "") + MESSAGE, lambda n, timeout=5: txt.get(n))


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_generated_key_round_trips(tmp_path: Path, kind: str) -> None:
    pem, txt = generate_key(kind)  # type: ignore[arg-type]
    assert txt.startswith(f"v=DKIM1; k={kind}; p=")
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    key = DkimKey.load("example.com", "s1", path)
    assert key.txt_value() == txt
    records = {dns_record_name("s1", "example.com").encode(): txt.encode()}
    signed = DkimSigner([key]).sign(MESSAGE, "") + MESSAGE
    assert verify(signed, lambda name, timeout=5: records.get(name))


def test_generate_key_bits() -> None:
    with pytest.raises(ValueError, match="2048 to 4096"):
        generate_key("rsa", 1024)
    with pytest.raises(ValueError, match="unknown key type"):
        generate_key("dsa", 2048)  # type: ignore[arg-type]


def test_dns_helpers() -> None:
    assert dns_record_name("mail", "Example.COM.") == "mail._domainkey.example.com."
    value = "v=DKIM1; k=rsa; p=" + "A" * 600
    strings = dns_txt_strings(value)
    parts = re.findall(r'"([^"]*)"', strings)
    assert [len(p) for p in parts] == [255, 255, 108]
    assert "".join(parts) == value
    assert dns_txt_strings("short") == '"short"'


# ---------------------------------------------------------------- config


def _settings(domains: list[dict[str, Any]]) -> Settings:
    """As serve loads them (runtime): key files are checked then."""
    return load_settings(
        data={"delivery": {"enabled": False}, "domains": domains}, environ={}, runtime=True
    )


def test_from_settings_single_and_dual(keys: Keys) -> None:
    settings = _settings(
        [
            {
                "name": "Example.com",
                "dkim_selector": "rsa1",
                "dkim_key": str(keys.paths["rsa1"]),
                "dkim_keys": [{"selector": "ed1", "key": str(keys.paths["ed1"])}],
            },
            {"name": "example.org"},
        ]
    )
    signer = DkimSigner.from_settings(settings)
    assert signer.domains() == frozenset({"example.com"})
    signed = signer.sign(MESSAGE, "") + MESSAGE
    assert len(signatures(signed.split(b"\r\n\r\n")[0])) == 2
    assert verify(signed, keys.dnsfunc, 0) and verify(signed, keys.dnsfunc, 1)


def test_from_settings_refuses_small_key(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "old.pem"
    path.write_bytes(_pem(small))
    settings = _settings([{"name": "example.com", "dkim_selector": "old", "dkim_key": str(path)}])
    with pytest.raises(ConfigError, match=r"old\.pem: RSA key has 1024 bits"):
        DkimSigner.from_settings(settings)


@pytest.mark.parametrize(
    ("domain", "error"),
    [
        ({"dkim_selector": "mail"}, '(name = "example.com"): dkim_selector and dkim_key must be'),
        ({"dkim_key": "KEY"}, '(name = "example.com"): dkim_selector and dkim_key must be'),
        (
            {"dkim_selector": "mail", "dkim_key": "/nonexistent/k.pem"},
            "(name = \"example.com\") dkim_key: cannot read file '/nonexistent/k.pem'",
        ),
        (
            {"dkim_selector": "bad_selector", "dkim_key": "KEY"},
            "dkim_selector: 'bad_selector' is not a DNS name",
        ),
        (
            {"dkim_keys": [{"selector": "s1", "key": "/nonexistent/k.pem"}]},
            'dkim_keys: entry #1 (selector = "s1"): cannot read file',
        ),
        (
            {
                "dkim_selector": "s1",
                "dkim_key": "KEY",
                "dkim_keys": [{"selector": "S1", "key": "KEY"}],
            },
            'selector "S1" is given twice',
        ),
    ],
)
def test_config_errors(tmp_path: Path, domain: dict[str, Any], error: str) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(b"x")

    def fill(value: Any) -> Any:  # "KEY" -> a readable file
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return str(key) if value == "KEY" else value

    with pytest.raises(ConfigError) as info:
        _settings([{"name": "example.com", **fill(domain)}])
    assert str(info.value).startswith('<config>: [[domains]] #1 (name = "example.com")')
    assert error in str(info.value)


# ---------------------------------------------------------------- CLI


def test_cli_keygen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["dkim", "keygen", "--domain", "Example.com", "--selector", "mail"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "mail.example.com.dkim.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert first.startswith(b"-----BEGIN PRIVATE KEY-----")

    lines = result.stdout.splitlines()
    record = next(line for line in lines if "IN TXT" in line)
    m = re.fullmatch(r'mail\._domainkey\.example\.com\. IN TXT ((?:"[^"]{1,255}" ?)+)', record)
    assert m, record
    parts = re.findall(r'"([^"]*)"', m.group(1))
    assert len(parts) == 2  # an RSA-2048 value is longer than one 255-octet string
    txt = "".join(parts)
    assert txt.startswith("v=DKIM1; k=rsa; p=")

    # the printed relay.toml lines are valid config, and the key signs what the TXT verifies
    toml = "\n".join(lines[lines.index("[[domains]]") :])
    (tmp_path / "relay.toml").write_text(toml + "\n[delivery]\nenabled = false\n")
    settings = load_settings(tmp_path / "relay.toml", environ={})
    signer = DkimSigner.from_settings(settings)
    records = {b"mail._domainkey.example.com.": txt.encode()}
    assert verify(signer.sign(MESSAGE, "") + MESSAGE, lambda name, timeout=5: records.get(name))

    again = runner.invoke(main, args)
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr
    assert path.read_bytes() == first


def test_cli_keygen_ed25519_out_and_bad_selector(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ed.pem"
    base = ["dkim", "keygen", "--domain", "example.com", "--type", "ed25519"]
    result = runner.invoke(main, [*base, "--selector", "ed1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert re.search(
        r'^ed1\._domainkey\.example\.com\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$',
        result.stdout,
        re.M,
    )
    bad = runner.invoke(main, [*base, "--selector", "a_b", "--out", str(tmp_path / "x.pem")])
    assert bad.exit_code == 2
    assert "--selector" in bad.stderr
    assert not (tmp_path / "x.pem").exists()


def test_signing_processes_exit_when_the_relay_is_killed(keys: Keys, tmp_path: Path) -> None:
    """SIGKILL gives the relay no chance to stop its signing processes: they notice the
    parent is gone and exit by themselves (no orphans holding keys and memory)."""
    import subprocess
    import sys
    import time

    import psutil

    script = tmp_path / "relay.py"
    key = str(keys.paths["rsa1"])
    script.write_text(
        "import asyncio\n"
        "from pathlib import Path\n"
        "from mailgate.delivery.dkim import DkimKey, DkimSigner\n"
        "async def main():\n"
        f"    signer = DkimSigner([DkimKey.load('example.com', 'rsa1', Path({key!r}))])\n"
        "    await signer.start_processes(2)\n"
        "    print(*signer._processes.pids(), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(psutil.pid_exists(p) for p in workers)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)

"""DKIM signing throughput on a 2 KB message: mailgate's DkimSigner against dkimpy's dkim.sign().

Both canonicalize with dkimpy (relaxed/relaxed, the same header list); they differ in the
private-key operation: dkimpy's pure-Python RSA against OpenSSL through ``cryptography``.
Each case signs in a loop for ``--seconds`` (default 3) after one signature that is checked
with dkimpy's verifier, and prints signatures/s. ``sign_async`` runs several signatures in
flight on the default thread pool, as the relay does: OpenSSL releases the GIL, so it can use
more than one core. Keys are generated fresh for each run; nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization

from mailgate.delivery.dkim import (
    SIGNED_HEADERS,
    DkimKey,
    DkimSigner,
    dns_record_name,
    generate_key,
)

DOMAIN = "example.com"


def message(size: int = 2048) -> bytes:
    head = (
        b"From: Alice Example <alice@example.com>\r\n"
        b"To: Bob Example <bob@example.net>\r\n"
        b"Subject: Your order #12345 has shipped\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        b"Message-ID: <20240101000000.12345@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
    )
    line = "Hello Bob, your parcel is on its way. Grüße!\r\n".encode()
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[: size - len(head)]


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def async_rate(signer: DkimSigner, raw: bytes, seconds: float, in_flight: int) -> float:
    async def run() -> float:
        count = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await signer.sign_async(raw, "alice@example.com")
                count += 1

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return count / (time.perf_counter() - start)

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench-dkim", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    args = parser.parse_args()

    raw = message(args.size)
    txt: dict[bytes, bytes] = {}
    keys: dict[str, DkimKey] = {}
    pems: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for selector, kind in (("rsa", "rsa"), ("ed", "ed25519")):
            pem, value = generate_key(kind)  # type: ignore[arg-type]
            path = Path(tmp) / f"{selector}.pem"
            path.write_bytes(pem)
            keys[selector] = DkimKey.load(DOMAIN, selector, path)
            pems[selector] = pem
            txt[dns_record_name(selector, DOMAIN).encode()] = value.encode()

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return txt.get(name)

    include = [h.encode() for h in SIGNED_HEADERS if h.encode() + b":" in raw.lower()]
    include += include  # over-signed, as mailgate does
    rsa_signer = DkimSigner([keys["rsa"]])
    ed_signer = DkimSigner([keys["ed"]])
    dual_signer = DkimSigner([keys["rsa"], keys["ed"]])

    def dkimpy(selector: str, algorithm: bytes) -> Callable[[], bytes]:
        # dkimpy wants the RSA key as PEM bytes and Ed25519 as the base64 seed (dknewkey's).
        key = pems[selector]
        if selector == "ed":
            seed = keys["ed"].private_key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            key = base64.b64encode(seed)
        return lambda: dkim.sign(
            raw,
            selector.encode(),
            DOMAIN.encode(),
            key,
            signature_algorithm=algorithm,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )

    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("RSA-2048  mailgate DkimSigner.sign", lambda: rsa_signer.sign(raw, "")),
        ("RSA-2048  dkimpy dkim.sign (pure-Python RSA)", dkimpy("rsa", b"rsa-sha256")),
        ("Ed25519   mailgate DkimSigner.sign", lambda: ed_signer.sign(raw, "")),
    ]
    try:
        import nacl  # noqa: F401  (dkimpy's Ed25519 needs PyNaCl)
    except ImportError:
        print("(PyNaCl not installed: skipping dkimpy's Ed25519)", file=sys.stderr)
    else:
        cases.append(("Ed25519   dkimpy dkim.sign (PyNaCl)", dkimpy("ed", b"ed25519-sha256")))
    cases.append(("RSA+Ed25519 mailgate dual (per message)", lambda: dual_signer.sign(raw, "")))

    print(
        f"DKIM signing, {len(raw)}-byte message, {args.seconds:g} s per case, "
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, dkimpy "
        f"{importlib.metadata.version('dkimpy')}"
    )
    for name, fn in cases:
        header = fn()
        ok = all(
            dkim.DKIM(header + raw).verify(idx=i, dnsfunc=dnsfunc)
            for i in range(header.count(b"DKIM-Signature:"))
        )
        if not ok:
            print(f"{name}: signature does not verify", file=sys.stderr)
            return 1
        per_s = rate(fn, args.seconds)
        print(f"  {name:<46} {per_s:>9,.0f} /s  {1e6 / per_s:>8,.0f} µs each")
    in_flight = 8
    per_s = async_rate(rsa_signer, raw, args.seconds, in_flight)
    name = f"RSA-2048  mailgate sign_async, {in_flight} in flight"
    print(f"  {name:<46} {per_s:>9,.0f} /s  {1e6 / per_s:>8,.0f} µs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DKIM keys: loading and checking a private key, its public DNS record, and making new
keys (``mailgate dkim keygen``). Apart from the signer (dkim.py) so that reading or making
a key needs neither dkimpy nor the signing processes."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from mailgate.exceptions import ConfigError

#: RFC 8301 forbids signing with keys under 1024 bits; receivers increasingly distrust 1024.
MIN_RSA_BITS = 2048
#: RFC 8301: verifiers MUST handle keys up to 4096 bits; larger ones may fail to verify.
MAX_RSA_BITS = 4096

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class DkimKeyError(ConfigError):
    """A DKIM private key file cannot be used; the message names the file."""


def load_private_key(path: Path) -> PrivateKey:
    """Read a DKIM private key: PEM (PKCS#1 or PKCS#8, RSA >= 2048 bits or Ed25519), or the
    raw base64 32-byte Ed25519 seed that dkimpy's ``dknewkey`` writes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot read DKIM key: {exc.strerror}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise DkimKeyError(
                f"{path}: the DKIM key is encrypted; store it unencrypted with mode 0600"
            ) from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise DkimKeyError(f"{path}: not a usable PEM private key ({exc})") from None
    else:
        try:
            seed = base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error:
            seed = b""
        if len(seed) != 32:
            raise DkimKeyError(
                f"{path}: not a DKIM private key (expected PEM, or a base64 Ed25519 seed)"
            )
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(
                f"{path}: RSA key has {key.key_size} bits; DKIM keys must have at least "
                f"{MIN_RSA_BITS} (make one with `mailgate dkim keygen`)"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimKeyError(f"{path}: not an RSA or Ed25519 key (the only DKIM key types)")


def _public_txt_value(key: PrivateKey) -> str:
    """The ``v=DKIM1; k=...; p=...`` value for the key's DNS TXT record."""
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


@dataclass(frozen=True)
class DkimKey:
    """One loaded key of a domain: loaded and checked once, used for every message."""

    domain: str
    selector: str
    private_key: PrivateKey
    path: Path

    @classmethod
    def load(cls, domain: str, selector: str, path: Path) -> DkimKey:
        return cls(domain.lower(), selector, load_private_key(path), path)

    @property
    def algorithm(self) -> bytes:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return b"rsa-sha256"
        return b"ed25519-sha256"

    def txt_value(self) -> str:
        """The TXT record value that publishes this key's public half."""
        return _public_txt_value(self.private_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign the SHA-256 of the canonicalized header fields.

        RSA: PKCS#1 v1.5 over the prehashed digest (RFC 6376 3.3.1). Ed25519: PureEdDSA over
        the 32-byte digest itself, not the headers (RFC 8463 section 3)."""
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(
                digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
            )
        return self.private_key.sign(digest)


def generate_key(kind: Literal["rsa", "ed25519"], bits: int = 2048) -> tuple[bytes, str]:
    """A new private key as unencrypted PKCS#8 PEM, and its DNS TXT value
    (``v=DKIM1; k=rsa; p=...``) to publish at :func:`dns_record_name`."""
    key: PrivateKey
    if kind == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(
                f"RSA DKIM keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits (RFC 8301)"
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown key type {kind!r} (use rsa or ed25519)")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, _public_txt_value(key)


def dns_record_name(selector: str, domain: str) -> str:
    """The fully qualified name of the key's TXT record: ``<selector>._domainkey.<domain>.``"""
    return f"{selector}._domainkey.{domain.lower().rstrip('.')}."


def dns_txt_strings(value: str) -> str:
    """A TXT value as zone-file strings: a DNS character-string holds at most 255 octets,
    so a longer value (any RSA-2048 key) is split into several quoted strings."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))

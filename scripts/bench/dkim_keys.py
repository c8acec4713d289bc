"""The signing scenarios' DKIM key, and the check that what the sink received verifies:
counting DKIM-Signature headers alone would not catch a signature over the wrong bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.config import DKIM_DOMAIN, DKIM_SELECTOR


@dataclass(frozen=True)
class DkimKeyFile:
    path: Path
    txt: str  # the DNS TXT value, to verify a signature without DNS


def make_dkim_key(workdir: Path) -> DkimKeyFile:
    """An RSA-2048 key for example.com in the temp dir (mode 0600, as keygen writes it)."""
    from mailgate.delivery.dkim import generate_key

    pem, txt = generate_key("rsa", 2048)
    path = workdir / "dkim.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return DkimKeyFile(path, txt)


def verify_sample(message: bytes, key: DkimKeyFile) -> bool:
    """Does one message the sink received carry a signature that verifies with dkimpy?
    Counting headers alone would not catch a signature over the wrong bytes."""
    import dkim

    if not message:
        return False
    name = f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode()

    def dnsfunc(qname: bytes, timeout: float = 5) -> bytes | None:
        return key.txt.encode() if qname.rstrip(b".") == name.rstrip(b".") else None

    return bool(dkim.verify(message, dnsfunc=dnsfunc))

"""DKIM signing (RFC 6376 with RSA-SHA256, RFC 8463 with Ed25519-SHA256), in this process
or in signing processes. The keys are in dkim_keys.py; their names are importable from
here too, as the CLI and the tests do.

dkimpy does the header work: it parses the header fields, canonicalizes them (relaxed) and
selects and hashes the signed ones plus the DKIM-Signature itself, exactly as its verifier
recomputes them. The body is canonicalized here (relaxed, the same bytes as dkimpy's, ~10x
faster) and the private-key operation is done by ``cryptography`` (OpenSSL) instead of
dkimpy's pure-Python RSA: ~3,300 RSA-2048 signatures/s per core against ~160/s, and OpenSSL
releases the GIL, so signing in threads also uses the second core.

Which domain signs: the domain of the message's RFC5322.From address, when it is a configured
``[[domains]]`` entry with at least one key (exact, case-insensitive match). There is no
fallback to the envelope sender or to a parent domain: a signature whose d= does not match
From does not help DMARC and only gives receivers a domain reputation to attach to mail that
is not its own. A message without exactly one From header (or with From addresses in more
than one domain) is not signed either.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import dkim
from dkim.canonicalization import CanonicalizationPolicy

from mailgate.address_syntax import ace
from mailgate.delivery.dkim_keys import (
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    DkimKey,
    DkimKeyError,
    dns_record_name,
    dns_txt_strings,
    generate_key,
    load_private_key,
)
from mailgate.workers import WorkerPool, WorkerUnavailable

if TYPE_CHECKING:
    from mailgate.config import Settings

log = logging.getLogger(__name__)

__all__ = [
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "SIGNED_HEADERS",
    "DkimKey",
    "DkimKeyError",
    "DkimSigner",
    "dns_record_name",
    "dns_txt_strings",
    "generate_key",
    "load_private_key",
]

#: Signed when present, in this order; each present one is listed once more than it occurs
#: (over-signing), so a field of that name added in transit breaks the signature.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
)

_SIGNED = tuple(name.encode() for name in SIGNED_HEADERS)
_POLICY = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_WIDTH = 78  # fold the DKIM-Signature header at RFC 5322's recommended line length
_SIG_NAME = b"DKIM-Signature"

KeySpec = tuple[str, str, str]  # domain, selector, key file: what a signing process loads


def _fold_tags(tags: Sequence[tuple[bytes, bytes]], header_list: Sequence[bytes]) -> bytes:
    """``DKIM-Signature: v=1; ...; h=...;<CRLF> b=`` folded at 78 columns.

    ``b=`` comes last on a line of its own, so the form that is hashed (b= empty) and the
    form that is sent are the same bytes up to ``b=``. ``h=`` may fold before a ``:``
    (RFC 6376 3.5 allows FWS there).
    """
    out = bytearray(_SIG_NAME + b":")
    col = len(out)

    def put(piece: bytes, sep: bytes) -> None:
        nonlocal col
        if col + len(sep) + len(piece) > _WIDTH:
            out.extend(b"\r\n ")
            col = 1
        else:
            out.extend(sep)
            col += len(sep)
        out.extend(piece)
        col += len(piece)

    for name, value in tags:
        put(name + b"=" + value + b";", b" ")
    for i, field in enumerate(header_list):
        last = i == len(header_list) - 1
        piece = (b"h=" if i == 0 else b":") + field + (b";" if last else b"")
        put(piece, b" " if i == 0 else b"")
    out.extend(b"\r\n b=")
    return bytes(out)


def _fold_b64(value: bytes, col: int) -> bytes:
    """Fold a base64 value that starts at column ``col`` (FWS inside b= is allowed)."""
    first = _WIDTH - col
    lines = [value[:first]] + [
        value[i : i + _WIDTH - 1] for i in range(first, len(value), _WIDTH - 1)
    ]
    return b"\r\n ".join(line for line in lines if line)


_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")  # aiosmtplib's LINE_ENDINGS_REGEX


def _on_the_wire(raw: bytes) -> bytes:
    """``raw`` with the line ends SMTP DATA will carry: CRLF only, ending in CRLF.

    aiosmtplib normalizes the same way before sending, and aiosmtpd keeps a client's bare LF
    or CR, so the stored message may differ from what the receiver verifies. Cheap when
    ``raw`` is already clean (three counts, no copy)."""
    crlf = raw.count(b"\r\n")
    if not (raw.count(b"\r") == crlf == raw.count(b"\n")):
        raw = _LINE_END.sub(b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


_WSP_RUNS = re.compile(rb" [ \t]+|\t[ \t]*")  # every WSP run except a lone space


def _relaxed_body(body: bytes) -> bytes:
    """The relaxed body canonicalization (RFC 6376 3.4.4) of a CRLF-only body.

    Byte for byte what dkimpy's ``Relaxed.canonicalize_body`` returns (the tests compare
    them), but its two regex passes cost a match per space: ~60 µs for 2 KB of text, more
    than the rest of the signature's Python work; this takes ~5 µs."""
    if b"\t" in body or b"  " in body:
        body = _WSP_RUNS.sub(b" ", body)
    if b" \r\n" in body:  # after compression, trailing WSP is exactly one space
        body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")  # CRs only come in CRLF pairs, so this drops whole lines
    return body + b"\r\n" if body else b""


# "Name <local@domain>" or "local@domain" with one "@" and no quoting, comments or lists.
_SIMPLE_FROM = re.compile(
    r'[^@"(),:;<>\\]*<?[^\s<>@"(),:;\\]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)\.?>?\s*'
)


def _from_domain(headers: Sequence[Sequence[bytes]]) -> str | None:
    """The single RFC5322.From domain, lower-cased; None when absent or ambiguous."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    text = values[0].decode("utf-8", "replace").replace("\r", "").replace("\n", "")
    simple = _SIMPLE_FROM.fullmatch(text)
    if simple:  # the usual one address, no quotes or comments: skip the slow parser
        return simple.group(1).lower()
    domains = {
        addr.rpartition("@")[2].strip().lower().rstrip(".")
        for _name, addr in email.utils.getaddresses([text])
        if "@" in addr
    }
    if len(domains) != 1:
        return None
    return ace(domains.pop()) or None  # keys are named by A-labels (DomainSettings)


class DkimSigner:
    """Signs outgoing messages with the keys of the configured sender domains.

    Built once at startup (keys are parsed and checked there, so a bad key stops the relay
    with a message naming the file instead of failing message by message).
    """

    def __init__(self, keys: Iterable[DkimKey], *, clock: Callable[[], float] = time.time) -> None:
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        # RSA first: verifiers that check only the topmost signature (and those that do not
        # know Ed25519 yet) see the signature they can verify.
        self._keys: Mapping[str, tuple[DkimKey, ...]] = {
            domain: tuple(sorted(ks, key=lambda k: k.algorithm != b"rsa-sha256"))
            for domain, ks in by_domain.items()
        }
        self._clock = clock
        self._processes: SigningProcesses | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> DkimSigner:
        """Load every ``[[domains]]`` key; raises DkimKeyError (a ConfigError) naming the file."""
        keys = []
        for domain in settings.domains:
            for selector, path in domain.dkim_pairs():
                try:
                    keys.append(DkimKey.load(domain.name, selector, path))
                except DkimKeyError as exc:
                    # Which file and which key of it: the path alone named neither.
                    raise DkimKeyError(
                        f"{settings.source}: [[domains]] {domain.name} (selector {selector}): {exc}"
                    ) from None
        return cls(keys, clock=clock)

    def domains(self) -> frozenset[str]:
        """The domains that have at least one key."""
        return frozenset(self._keys)

    def sign(self, raw: bytes, envelope_sender: str = "") -> bytes:
        """The DKIM-Signature header field(s) to prepend to ``raw``, or b"" if no key applies.

        ``raw`` is the message as it is handed to the transport; the result is CRLF-terminated
        and folded: send ``result + raw``. The hash covers the message as SMTP transmits it
        (aiosmtplib turns a bare LF or CR into CRLF and adds a final CRLF; see
        :func:`_on_the_wire`), so the signature holds for what the receiver gets even if
        ``raw`` has such line ends. ``envelope_sender`` does not pick the domain (DMARC aligns
        on From, see the module docstring); it is only logged. A message whose header dkimpy
        cannot parse is sent unsigned (logged) rather than failed.

        This is CPU work (~0.5 ms for RSA-2048 and 2 KB): on the event loop use
        :meth:`sign_async`.
        """
        if not self._keys:
            return b""
        wire = _on_the_wire(raw)
        if wire.startswith(b"\r\n"):
            return b""  # no header at all, so no From
        end = wire.find(b"\r\n\r\n")
        head, body = (wire, b"") if end < 0 else (wire[: end + 2], wire[end + 4 :])
        try:
            headers, _ = dkim.rfc822_parse(head)
        except (dkim.MessageFormatError, IndexError) as exc:
            log.warning("not DKIM-signing a message from %s: bad header (%s)", envelope_sender, exc)
            return b""
        domain = _from_domain(headers)
        keys = self._keys.get(domain or "")
        if not keys:
            return b""
        canonical = _POLICY.canonicalize_headers(headers)
        counts: dict[bytes, int] = {}
        for name, _value in canonical:
            counts[name] = counts.get(name, 0) + 1
        header_list: list[bytes] = []
        for field in _SIGNED:
            if counts.get(field):
                header_list += [field] * (counts[field] + 1)  # +1: over-sign
        include = tuple(header_list)
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        timestamp = str(int(self._clock())).encode()
        out = []
        for key in keys:
            tags = [
                (b"v", b"1"),
                (b"a", key.algorithm),
                (b"c", b"relaxed/relaxed"),
                (b"d", key.domain.encode()),
                (b"s", key.selector.encode()),
                (b"t", timestamp),
                (b"bh", body_hash),
            ]
            prefix = _fold_tags(tags, header_list)
            hasher = hashlib.sha256()
            # dkimpy hashes the selected header fields and then this header with b= empty,
            # exactly as its verifier (and every other) recomputes it.
            unsigned_value = prefix[len(_SIG_NAME) + 1 :]
            dkim.hash_headers(hasher, _POLICY, canonical, include, (_SIG_NAME, unsigned_value), {})
            signature = base64.b64encode(key.sign_digest(hasher.digest()))
            col = len(prefix) - prefix.rfind(b"\n") - 1
            out.append(prefix + _fold_b64(signature, col) + b"\r\n")
        return b"".join(out)

    async def sign_async(self, raw: bytes, envelope_sender: str = "") -> bytes:
        """:meth:`sign` off the event loop: in the signing processes once
        :meth:`start_processes` has run, else in a worker thread.

        An RSA-2048 signature takes ~0.3 ms of CPU and canonicalizing a large message several
        ms; on the event loop that would delay every SMTP session and delivery. In threads the
        canonicalization (Python) still holds the GIL that the event loop needs, which made
        accepts wait while the relay delivered; processes take it off that GIL entirely.
        """
        if not self._keys:
            return b""
        if self._processes is not None:
            try:
                return await self._processes.sign(raw, envelope_sender)
            except WorkerUnavailable as exc:  # a worker died: this one in a thread
                log.warning("signing in a thread: %s", exc)
        return await asyncio.to_thread(self.sign, raw, envelope_sender)

    async def start_processes(self, processes: int) -> None:
        """Sign in ``processes`` child processes from now on (started and ready here, so
        no delivery waits for them to import)."""
        if not self._keys or processes < 1:
            return
        keys: list[KeySpec] = [
            (k.domain, k.selector, str(k.path)) for ks in self._keys.values() for k in ks
        ]
        workers = SigningProcesses(keys, processes)
        await workers.start()
        self._processes = workers

    async def close(self) -> None:
        """Stop the signing processes (they finish what they were given)."""
        if self._processes is not None:
            workers, self._processes = self._processes, None
            await workers.close()


class SigningProcesses(WorkerPool):
    """DKIM signing in child processes (:mod:`mailgate.workers`) running
    ``mailgate.delivery.signing``: dkimpy's header canonicalization is Python, so in threads
    it holds the GIL the event loop needs."""

    def __init__(self, keys: list[KeySpec], processes: int) -> None:
        super().__init__("mailgate.delivery.signing", keys, processes, what="DKIM signing process")

    async def sign(self, raw: bytes, envelope_sender: str) -> bytes:
        """The DKIM-Signature header(s) for ``raw``, from the least busy process."""
        header: bytes = await self.call((raw, envelope_sender))
        return header

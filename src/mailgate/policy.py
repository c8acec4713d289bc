"""Pure policy decisions shared by the ingresses and accept(): no I/O here."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

from mailgate import replies
from mailgate.address_syntax import ace
from mailgate.models import Credential, SmtpReply
from mailgate.text import utf8_encodable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address as an IP (scope id dropped, IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(address: str, networks: Iterable[Network]) -> bool:
    ip = _client_ip(address)
    return ip is not None and any(ip in net for net in networks)


def is_loopback(address: str) -> bool:
    ip = _client_ip(address)
    return ip is not None and ip.is_loopback


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9\-\u0080-\U0010ffff]{1,63}(?<!-)$")
_ATOM_SPECIALS = frozenset(' \t\r\n<>,;:\\"()[]@')


def _valid_local(local: str) -> bool:
    if len(local) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in local):
        return False
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = local[1:-1].replace("\\\\", "").replace('\\"', "")
        return '"' not in inner and "\\" not in inner
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return not any(c in _ATOM_SPECIALS for c in local)


@lru_cache(maxsize=8192)  # the same senders again and again: a batch checks one 2000 times
def split_address(address: str) -> tuple[str, str] | None:
    """'user@Example.COM' -> ('user', 'example.com'); None if it is not an address.

    Dot-atom or quoted local part (non-ASCII allowed, for SMTPUTF8); a domain of
    LDH or internationalised labels with at least one dot.
    """
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain or len(address) > 320:
        return None
    if not utf8_encodable(address):
        return None
    if not _valid_local(local):
        return None
    domain = domain.lower().removesuffix(".")
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 253 or not all(_LABEL.match(x) for x in labels):
        return None
    return local, domain


def check_sender(
    sender: str, credential: Credential, configured: frozenset[str]
) -> SmtpReply | None:
    """May this credential send as ``sender``? None if yes, else the refusal."""
    parts = split_address(sender)
    if parts is None:
        return replies.SENDER_SYNTAX
    domain = ace(parts[1])  # configured names are in this form (DomainSettings)
    if domain not in configured:
        return replies.SENDER_DOMAIN_REFUSED
    if credential.domains is not None and not {domain, parts[1]}.intersection(credential.domains):
        return replies.SENDER_DOMAIN_REFUSED
    return None


def check_recipient(recipient: str) -> SmtpReply | None:
    return None if split_address(recipient) is not None else replies.RCPT_SYNTAX

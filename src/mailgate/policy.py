"""Pure policy decisions shared by the ingresses and accept(): no I/O here."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mailgate import replies
from mailgate.models import Credential, SmtpReply

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def split_address(address: str) -> tuple[str, str] | None:
    """'user@Example.COM' -> ('user', 'example.com'); None if it is not an address."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain or len(address) > 320:
        return None
    if any(c in address for c in ' \t\r\n<>,;\\"()[]') and not local.startswith('"'):
        return None
    domain = domain.lower().rstrip(".")
    if not domain or ".." in domain or domain.startswith(".") or "." not in domain:
        return None
    return local, domain


def check_sender(
    sender: str, credential: Credential, configured: frozenset[str]
) -> SmtpReply | None:
    """May this credential send as ``sender``? None if yes, else the refusal."""
    parts = split_address(sender)
    if parts is None:
        return replies.SENDER_SYNTAX
    domain = parts[1]
    if domain not in configured:
        return replies.SENDER_DOMAIN_REFUSED
    if credential.domains is not None and domain not in credential.domains:
        return replies.SENDER_DOMAIN_REFUSED
    return None


def check_recipient(recipient: str) -> SmtpReply | None:
    return None if split_address(recipient) is not None else replies.RCPT_SYNTAX

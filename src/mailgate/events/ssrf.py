"""Where webhooks may go: not to this machine, its private networks or a cloud metadata
service, whatever name points there (server-side request forgery).

A URL is checked when it is configured and again at each send, on the addresses its name
resolves to then; the send connects to an address that passed, so a name that changes
between the check and the connection (DNS rebinding) cannot slip through.
``[webhooks] allow_private`` lifts the rule for tests and intranets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64's well-known prefix (RFC 6052): 64:ff9b::a9fe:a9fe reaches 169.254.169.254.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What a URL may not hold (WHATWG URL parsing drops or refuses them; a stored URL is sent
# as it was given): spaces and control characters.
_UNSAFE = frozenset(map(chr, [*range(0x21), 0x7F]))


class UrlRefused(ValueError):
    """The URL is not one webhooks may be sent to; the text says why."""


def parse_url(url: str) -> SplitResult:
    """An absolute http(s) URL with a host, or UrlRefused."""
    if not _UNSAFE.isdisjoint(url):
        raise UrlRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise UrlRefused("must not carry a user name or password")
    return parts


def refused_address(ip: IpAddress) -> str | None:
    """Why webhooks may not go to ``ip`` (None: they may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            return refused_address(inner)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "not a unicast address"
    if not ip.is_global:
        return "a private address"
    return None


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to its destination: mapped, 6to4, Teredo's
    client or NAT64 (routers on the way unwrap them)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _checked(host: str, infos: list[tuple[object, ...]], allow_private: bool) -> list[str]:
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # type: ignore[index]
    if not addresses:
        raise UrlRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            why = refused_address(ipaddress.ip_address(address.split("%")[0]))
            if why:
                raise UrlRefused(
                    f"{host} resolves to {address}, {why}: set [webhooks] allow_private = "
                    "true to allow it"
                )
    return addresses


def check_url(url: str, *, allow_private: bool) -> None:
    """At configuration: UrlRefused if the URL is malformed or its host is (or resolves
    to) a refused address. A name that does not resolve now is let through: the send
    checks it again."""
    parts = parse_url(url)
    if allow_private:
        return  # nothing is refused: no lookup needed
    host = parts.hostname or ""
    ip = literal(host)
    if ip is not None:
        why = refused_address(ip)
        if why:
            raise UrlRefused(f"{host} is {why}: set [webhooks] allow_private = true to allow it")
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    _checked(host, infos, allow_private=False)  # type: ignore[arg-type]


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """At a send: the addresses to connect to, all allowed; UrlRefused otherwise."""
    ip = literal(host)
    if ip is not None:
        why = refused_address(ip)
        if why and not allow_private:
            raise UrlRefused(f"{host} is {why}")
        return [str(ip)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"{host} does not resolve: {exc}") from None
    return _checked(host, infos, allow_private)  # type: ignore[arg-type]

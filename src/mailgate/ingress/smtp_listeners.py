"""The SMTP listening sockets, and the count of open connections that caps them."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Iterable

from mailgate import policy, replies
from mailgate.config import Settings
from mailgate.config_service import SmtpSettings
from mailgate.exceptions import ListenError
from mailgate.ingress.smtp_handler import SmtpHandler
from mailgate.ingress.smtp_session import RelaySMTP
from mailgate.models import SmtpReply
from mailgate.units import parse_hostport

# The SMTP ingress logs under the name it always had (ingress/smtp.py before the split).
log = logging.getLogger("mailgate.ingress.smtp")


class Connections:
    """The open SMTP connections, counted in all and per client address, so that one
    client (or a flood of them) cannot take every socket and all the memory."""

    def __init__(self, smtp: SmtpSettings) -> None:
        self.open: set[RelaySMTP] = set()
        self._per_client: Counter[str] = Counter()
        # The relay is stopping: a new transaction (MAIL, or DATA not yet begun) gets 421.
        self.stopping = False
        self.reconfigure(smtp)

    def reconfigure(self, smtp: SmtpSettings) -> None:
        """New limits (a reload) for the connections from now on; none is closed."""
        self._max = smtp.max_connections
        self._max_per_client = smtp.max_connections_per_client
        self._networks = smtp.networks()

    def add(self, conn: RelaySMTP) -> None:
        self.open.add(conn)
        self._per_client[conn.peer_address] += 1

    def discard(self, conn: RelaySMTP) -> None:
        if conn not in self.open:
            return
        self.open.remove(conn)
        self._per_client[conn.peer_address] -= 1
        if self._per_client[conn.peer_address] <= 0:
            del self._per_client[conn.peer_address]

    def refusal(self, conn: RelaySMTP) -> SmtpReply | None:
        """The 421 for ``conn`` (already counted) if it is one too many, else None."""
        if len(self.open) > self._max:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_client[conn.peer_address] > self._max_per_client and not policy.is_trusted(
            conn.peer_address, self._networks
        ):
            return replies.TOO_MANY_FROM_CLIENT
        return None


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SmtpListeners:
    """The listening sockets of ``[smtp] listen`` and ``implicit_tls_listen``."""

    def __init__(self, settings: Settings, handler: SmtpHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._servers: list[asyncio.Server] = []
        smtp = settings.smtp
        self.connections = Connections(smtp)
        self._tls = (
            server_tls_context(str(smtp.tls_cert), str(smtp.tls_key))
            if smtp.tls_cert and smtp.tls_key
            else None
        )

    def reconfigure(self, settings: Settings) -> None:
        """A reload: the handler's settings (every session), connection limits, and the
        settings new connections start with (idle timeout, plain-text AUTH on loopback).
        Listen addresses and TLS need a restart."""
        self._settings = settings
        self.connections.reconfigure(settings.smtp)
        self._handler.reconfigure(settings)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        smtp = self._settings.smtp
        specs = [(a, False) for a in smtp.listen] + [(a, True) for a in smtp.implicit_tls_listen]
        for address, implicit in specs:
            host, port = parse_hostport(address)

            def factory(implicit: bool = implicit) -> RelaySMTP:
                return RelaySMTP(
                    self._handler,
                    settings=self._settings,
                    tls_context=self._tls,
                    implicit_tls=implicit,
                    connections=self.connections,
                )

            try:
                server = await loop.create_server(
                    factory,
                    host=host,
                    port=port,
                    ssl=self._tls if implicit else None,
                    reuse_address=True,
                )
            except OSError as exc:
                raise ListenError.of("SMTP", address, exc) from exc
            self._servers.append(server)
            log.info(
                "SMTP listening on %s%s",
                self._format(server),
                " (implicit TLS)" if implicit else "",
            )

    @staticmethod
    def _format(server: asyncio.Server) -> str:
        return ", ".join(
            f"[{s[0]}]:{s[1]}" if ":" in s[0] else f"{s[0]}:{s[1]}"
            for s in (sock.getsockname() for sock in server.sockets)
        )

    def addresses(self) -> list[tuple[str, int, bool]]:
        """(host, port, implicit_tls) of every bound socket (port 0 resolved)."""
        out: list[tuple[str, int, bool]] = []
        implicit_flags: Iterable[bool] = [False] * len(self._settings.smtp.listen) + [True] * len(
            self._settings.smtp.implicit_tls_listen
        )
        for server, implicit in zip(self._servers, implicit_flags, strict=False):
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1], implicit))
        return out

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening; let messages in DATA finish, then say 421 to everyone left. No
        new transaction starts meanwhile: under load one always had a message in DATA, so
        the stop waited its whole grace, acknowledging new mail all along."""
        self.connections.stopping = True
        for server in self._servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections.open) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections.open):
            if conn.transport is not None and not conn.transport.is_closing():
                try:
                    conn._writer.write(f"{replies.SHUTTING_DOWN.line()}\r\n".encode())
                except Exception:
                    log.debug("could not send 421 on shutdown", exc_info=True)
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

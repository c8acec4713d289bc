"""The SMTP listening sockets, and the count of open connections that caps them."""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections import Counter
from collections.abc import Callable, Iterable

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
        # Implicit-TLS connections in their handshake, in all and per client address.
        self._handshakes: Counter[str] = Counter()
        self._handshaking = 0
        # The relay is stopping: a new transaction (MAIL, or DATA not yet begun) gets 421.
        self.stopping = False
        self.reconfigure(smtp)

    def reconfigure(self, smtp: SmtpSettings) -> None:
        """New limits (a reload) for the connections from now on; none is closed."""
        self._max = smtp.max_connections
        self._max_per_client = smtp.max_connections_per_client
        self._networks = smtp.networks()

    def add(self, conn: RelaySMTP) -> None:
        """``conn`` connected (its TLS handshake done, for implicit TLS: that count ends,
        before its greeting asks refusal(), which would count it twice)."""
        self.end_handshake(conn)
        self.open.add(conn)
        self._per_client[conn.peer_address] += 1

    def discard(self, conn: RelaySMTP) -> None:
        if conn not in self.open:
            return
        self.open.remove(conn)
        self._per_client[conn.peer_address] -= 1
        if self._per_client[conn.peer_address] <= 0:
            del self._per_client[conn.peer_address]

    def begin_handshake(self, address: str) -> bool:
        """Count an implicit-TLS connection from ``address`` from its accept on (False: one
        too many); its session's ``handshake_from`` holds the address until end_handshake."""
        if self._over(address, 1) is not None:
            return False
        self._handshakes[address] += 1
        self._handshaking += 1
        return True

    def end_handshake(self, conn: RelaySMTP) -> None:
        """The handshake's count of ``conn`` ends, if it has one: it is done (add), failed,
        timed out, or the client left."""
        address = conn.handshake_from
        if address is None:
            return
        conn.handshake_from = None
        self._handshaking -= 1
        self._handshakes[address] -= 1
        if self._handshakes[address] <= 0:
            del self._handshakes[address]

    def refusal(self, conn: RelaySMTP) -> SmtpReply | None:
        """The 421 for ``conn`` (already counted) if it is one too many, else None."""
        return self._over(conn.peer_address, 0)

    def _over(self, address: str, more: int) -> SmtpReply | None:
        """The 421 if the open connections and those in an implicit-TLS handshake, ``more``
        with them, pass a limit (in all, or from ``address`` outside trusted_networks): the
        handshakes count on every port (one client held the limit on each)."""
        if len(self.open) + self._handshaking + more > self._max:
            return replies.TOO_MANY_CONNECTIONS
        from_client = self._per_client[address] + self._handshakes[address] + more
        if from_client > self._max_per_client and not policy.is_trusted(address, self._networks):
            return replies.TOO_MANY_FROM_CLIENT
        return None


# At most this long for an implicit-TLS client's handshake (asyncio's default is 60 s); a
# shorter idle_timeout bounds it too.
HANDSHAKE_TIMEOUT = 30.0


class TlsHandshake(asyncio.Protocol):
    """An implicit-TLS connection (``implicit_tls_listen``) from its accept: counted, then
    handed to a TLS layer whose handshake must end within ``timeout``, then its session's
    (RelaySMTP, which the TLS layer calls once the handshake is done).

    With TLS in the listening socket itself, the session saw a connection only once its
    handshake was done: one client could hold any number of sockets in the handshake, 60 s
    each, counted by no limit. One over the limits is closed at once here (a 421 cannot be
    read before TLS). The TLS layer is asyncio's own SSLProtocol, put on the transport in
    connection_made as aiosmtpd does for STARTTLS: loop.start_tls would take the transport
    over a turn of the loop later, and a ClientHello read in between would be lost.
    """

    def __init__(
        self,
        connections: Connections,
        tls: ssl.SSLContext,
        timeout: float,
        session: Callable[[], RelaySMTP],
    ) -> None:
        self._connections = connections
        self._tls = tls
        self._timeout = timeout
        self._session = session
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else ""
        if not self._connections.begin_handshake(self._address):
            log.info("refused an implicit-TLS connection from %s: too many", self._address)
            transport.abort()  # type: ignore[attr-defined]
            return
        session = self._session()
        session.handshake_from = self._address  # until Connections.end_handshake
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.add_done_callback(lambda f: self._handshake_done(f, session))
        layer = sslproto.SSLProtocol(
            loop,
            session,
            self._tls,
            done,
            server_side=True,
            ssl_handshake_timeout=self._timeout,
        )
        transport.set_protocol(layer)
        layer.connection_made(transport)

    def _handshake_done(self, done: asyncio.Future[None], session: RelaySMTP) -> None:
        """Failed, timed out or the client left (the session never connected): its count
        ends here; done, it ended as the session connected (Connections.add)."""
        self._connections.end_handshake(session)
        exc = None if done.cancelled() else done.exception()
        if exc is not None:
            log.info("TLS handshake with %s failed: %r", self._address, exc)


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

            factory = self._implicit_tls if implicit else self._session
            try:
                server = await loop.create_server(factory, host=host, port=port, reuse_address=True)
            except OSError as exc:
                raise ListenError.of("SMTP", address, exc) from exc
            self._servers.append(server)
            log.info(
                "SMTP listening on %s%s",
                self._format(server),
                " (implicit TLS)" if implicit else "",
            )

    def _session(self, implicit_tls: bool = False) -> RelaySMTP:
        return RelaySMTP(
            self._handler,
            settings=self._settings,
            tls_context=self._tls,
            implicit_tls=implicit_tls,
            connections=self.connections,
        )

    def _implicit_tls(self) -> TlsHandshake:
        assert self._tls is not None
        timeout = min(HANDSHAKE_TIMEOUT, self._settings.smtp.idle_timeout)
        return TlsHandshake(
            self.connections, self._tls, timeout, lambda: self._session(implicit_tls=True)
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

"""uvicorn inside our event loop, on sockets we bound (the API's app is http.create_app).

mailgate owns the signals and the shutdown order (app.py), so uvicorn is started and
stopped by hand: ``Server.startup(sockets=)`` and ``Server.main_loop()``, the private names
of uvicorn the relay uses (docs/dependencies.md; tests/unit/test_private_names.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from starlette.applications import Starlette

from mailgate.config import Settings
from mailgate.exceptions import ListenError
from mailgate.ingress.http_protocol import HttpProtocol
from mailgate.units import parse_hostport

log = logging.getLogger(__name__)
# s an idle keep-alive connection (or one that never sent anything) is kept open.
KEEP_ALIVE = 30.0


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


class HttpServer:
    """uvicorn inside our event loop: mailgate owns the signals and the shutdown order."""

    def __init__(self, settings: Settings, app: Starlette) -> None:
        self._settings = settings
        self._app = app
        self._sockets: list[socket.socket] = []
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self._settings.http.listen:
            return
        for address in self._settings.http.listen:
            host, port = parse_hostport(address)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise ListenError.of("HTTP", address, exc) from exc
            sock.listen(1024)
            sock.setblocking(False)
            self._sockets.append(sock)
        config = uvicorn.Config(
            self._app,
            http=HttpProtocol,
            lifespan="off",
            log_level="warning",
            log_config=None,  # uvicorn's records go to the relay's handler, in its format
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=KEEP_ALIVE,
        )
        config.load()
        server = _Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=self._sockets)
        self._server = server
        self._task = asyncio.create_task(server.main_loop(), name="mailgate-http")
        for sock in self._sockets:
            name = sock.getsockname()
            log.info("HTTP API listening on %s:%s", name[0], name[1])

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._sockets]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            # main_loop only ticks (the Date header) and looks at should_exit every 0.1 s:
            # ended at once instead of waiting for that tick. shutdown() does the stopping.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._server.shutdown(sockets=self._sockets)
        self._server = None

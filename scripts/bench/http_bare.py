"""The reference of bench-http's ``bare-send``: Starlette + uvicorn answering the native send.

The same request as ``send`` (2 KB JSON, bearer key) answered 202 by a bare Starlette
route that reads and parses the JSON body and answers a JSON body of the shape mailgate
answers, under uvicorn with mailgate's settings (uvloop, httptools, no access log): the
framework's ceiling for this request, which the issue measures mailgate's send against.

Run as ``python -m bench.http_bare`` (bench-http starts it): it listens on a port the
kernel picks and prints "HTTP API listening on 127.0.0.1:PORT" to stderr, as mailgate does.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid
from typing import Any

HOST = "127.0.0.1"


def app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def send(request: Request) -> Response:
        body = await request.json()
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return JSONResponse({"error": {"code": "unauthorized"}}, 401)
        data = {
            "id": str(uuid.uuid4()),
            "message_id": f"<{uuid.uuid4()}@bench>",
            "from": body.get("from"),
            "to": body.get("to"),
            "subject": body.get("subject"),
            "status": "queued",
            "tags": body.get("tags", []),
            "metadata": body.get("metadata", {}),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        return JSONResponse({"data": data}, 202)

    return Starlette(routes=[Route("/v1/messages/send", send, methods=["POST"])])


def main() -> None:
    import uvicorn
    import uvloop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    config = uvicorn.Config(
        app(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        loop="uvloop",
        http="httptools",
    )
    print(f"HTTP API listening on {HOST}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    uvloop.install()
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()

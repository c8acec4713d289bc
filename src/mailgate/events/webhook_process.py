"""The webhook process: a child of ``mailgate serve`` that makes the HTTP requests.

Why a process of its own: a request is CPU on an event loop (TLS, HTTP, JSON), and in the
relay's process it would run beside the SMTP and HTTP listeners, so a burst of webhooks
would slow accepts. The relay's process claims outbox rows and records the outcomes (it
holds the store); this process builds each body, signs it, checks the address again
(events/ssrf.py) and posts it, then answers with the HTTP status or the error.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mailgate.events.ssrf import UrlRefused, literal, refused_address, resolve
from mailgate.events.webhook_models import (
    WebhookAnswer,
    WebhookBatch,
    WebhookHello,
    WebhookRequest,
)
from mailgate.events.webhook_payload import payload
from mailgate.events.webhook_signing import signature
from mailgate.worker_child import answer_each, run_child
from mailgate.workers import WorkerPool

log = logging.getLogger(__name__)

RESOLVE_TTL = 30  # s an endpoint's checked addresses are reused for new connections
MAX_ERROR_BODY = 300  # bytes of a failed answer's body kept as its error
MAX_READ = 65536  # bytes of an answer read at most


class WebhookProcess(WorkerPool):
    """The relay's side: one child, started again if it dies."""

    def __init__(self, hello: WebhookHello) -> None:
        super().__init__(__name__, hello, 1, what="webhook process")

    async def post(self, batch: WebhookBatch) -> tuple[WebhookAnswer, ...]:
        """Each request of ``batch`` made; their answers, in its order."""
        answers: tuple[WebhookAnswer, ...] = await self.call(batch)
        return answers


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delay or HTTP date), None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class _Refused(OSError):
    """The resolver's refusal, as the kind of error aiohttp lets through."""


class _CheckedResolver:
    """aiohttp's resolver for new connections: only addresses webhooks may go to
    (events/ssrf.py). The connection is made to an address this returned, so a name that
    resolves elsewhere a moment later changes nothing."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        try:
            addresses = await resolve(host, port, allow_private=False)
        except UrlRefused as exc:
            raise _Refused(str(exc)) from None  # aiohttp passes OSErrors on, not others
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class Poster:
    """Posts signed webhooks over one pool of kept-alive connections (aiohttp: httpx made
    a tenth as many requests a second here once 32 were in flight)."""

    def __init__(self, hello: WebhookHello) -> None:
        import aiohttp

        from mailgate import __version__

        self._hello = hello
        self._aiohttp = aiohttp
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}  # (endpoint, limit)
        connector = aiohttp.TCPConnector(
            limit=0,  # the relay bounds requests per endpoint ([webhooks] max_in_flight)
            resolver=None if hello.allow_private else _CheckedResolver(),  # type: ignore[arg-type]
            ttl_dns_cache=RESOLVE_TTL,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=hello.timeout),
            headers={"user-agent": f"mailgate-webhooks/{__version__}"},
            trust_env=False,  # no proxy from the environment: the checked address is used
            auto_decompress=False,
        )

    async def post_batch(self, batch: WebhookBatch) -> tuple[WebhookAnswer, ...]:
        """A batch's requests, at most ``batch.limit`` in flight to its endpoint (across
        batches: a lane may have several out)."""
        slots = self._slots.get((batch.endpoint, batch.limit))
        if slots is None:
            slots = self._slots[(batch.endpoint, batch.limit)] = asyncio.Semaphore(batch.limit)

        async def limited(req: WebhookRequest) -> WebhookAnswer:
            async with slots:
                try:
                    return await self.post(req)
                except Exception as exc:  # one request's bug must not fail the others
                    log.exception("webhook %s failed", req.msg_id)
                    return WebhookAnswer(None, f"{type(exc).__name__}: {exc}", None)

        return tuple(await asyncio.gather(*(limited(r) for r in batch.requests())))

    async def post(self, req: WebhookRequest) -> WebhookAnswer:
        aiohttp = self._aiohttp
        try:
            _, body = payload(req.row)
            host = urlsplit(req.url).hostname or ""
            ip = literal(host)
            if ip is not None and not self._hello.allow_private:
                why = refused_address(ip)  # literal addresses never reach the resolver
                if why:
                    raise UrlRefused(f"{host} is {why}")
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": req.msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": signature(req.keys, req.msg_id, ts, body),
            }
            async with self._session.post(
                req.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = await resp.content.read(MAX_READ)
                error = ""
                if not 200 <= resp.status < 300:
                    shown = " ".join(text[:MAX_ERROR_BODY].decode("utf-8", "replace").split())
                    error = f"HTTP {resp.status}" + (f": {shown}" if shown else "")
                wait = retry_after(resp.headers.get("retry-after"), time.time())
                return WebhookAnswer(resp.status, error, wait)
        except UrlRefused as exc:
            return WebhookAnswer(None, f"refused: {exc}", None)
        except TimeoutError:
            return WebhookAnswer(None, f"no answer within {self._hello.timeout:g} s", None)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                return WebhookAnswer(None, f"refused: {exc.os_error}", None)
            return WebhookAnswer(None, f"cannot connect: {exc.os_error}", None)
        except (aiohttp.ClientError, OSError) as exc:
            return WebhookAnswer(None, f"{type(exc).__name__}: {exc}", None)

    async def close(self) -> None:
        await self._session.close()


async def _setup(
    hello: WebhookHello, send: Callable[[object], None]
) -> tuple[Callable[[Any], None], Callable[[], Any]]:
    from mailgate.logs import setup_logging

    setup_logging(hello.log_level)
    poster = Poster(hello)
    return answer_each(
        poster.post_batch,
        send,
        name=lambda batch: f"webhooks to {batch.endpoint}",
        finish=poster.close,
    )


def main() -> None:
    run_child(_setup)


if __name__ == "__main__":
    main()

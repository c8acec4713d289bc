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
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mailgate.events.webhook_models import WebhookAnswer, WebhookHello, WebhookRequest
from mailgate.workers import WorkerPool, child_setup, exchange_messages, failure

log = logging.getLogger(__name__)

RESOLVE_TTL = 30.0  # s an endpoint's checked addresses are reused
MAX_ERROR_BODY = 300  # bytes of a failed answer's body kept as its error


class WebhookProcess(WorkerPool):
    """The relay's side: one child, started again if it dies."""

    def __init__(self, hello: WebhookHello) -> None:
        super().__init__(__name__, hello, 1, what="webhook process")

    async def post(self, request: WebhookRequest) -> WebhookAnswer:
        answer: WebhookAnswer = await self.call(request)
        return answer


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


class Poster:
    """Posts signed webhooks with one pooled HTTP client."""

    def __init__(self, hello: WebhookHello) -> None:
        import httpx

        from mailgate import __version__

        self._hello = hello
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(hello.timeout),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is used
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=256),
            headers={"user-agent": f"mailgate-webhooks/{__version__}"},
        )
        self._resolved: dict[tuple[str, int], tuple[list[str], float]] = {}

    async def _target(self, url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL to connect to (the checked address in place of the name), the Host
        header, and the TLS server name."""
        from mailgate.events.ssrf import resolve

        parts = urlsplit(url)
        if self._hello.allow_private:
            return url, {}, {}
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        now = time.monotonic()
        hit = self._resolved.get((host, port))
        if hit is None or hit[1] < now:
            hit = (await resolve(host, port, allow_private=False), now + RESOLVE_TTL)
            self._resolved[(host, port)] = hit
        address = hit[0][0]
        shown = f"[{address}]" if ":" in address else address
        netloc = f"{shown}:{parts.port}" if parts.port else shown
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        ext = {"sni_hostname": host} if parts.scheme == "https" else {}
        return target, {"host": parts.netloc}, ext

    async def post(self, req: WebhookRequest) -> WebhookAnswer:
        from mailgate.events.ssrf import UrlRefused
        from mailgate.events.webhook_payload import payload
        from mailgate.events.webhook_signing import signature

        httpx = self._httpx
        try:
            _, body = payload(req.row)
            target, headers, ext = await self._target(req.url)
            ts = int(time.time())
            headers.update(
                {
                    "content-type": "application/json",
                    "webhook-id": req.msg_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": signature(req.keys, req.msg_id, ts, body),
                }
            )
            async with asyncio.timeout(self._hello.timeout):
                async with self._client.stream(
                    "POST", target, content=body, headers=headers, extensions=ext
                ) as resp:
                    error = ""
                    if not 200 <= resp.status_code < 300:
                        error = await _start_of(resp)
                    wait = retry_after(resp.headers.get("retry-after"), time.time())
                    return WebhookAnswer(resp.status_code, error, wait)
        except UrlRefused as exc:
            return WebhookAnswer(None, f"refused: {exc}", None)
        except TimeoutError:
            return WebhookAnswer(None, f"no answer within {self._hello.timeout:g} s", None)
        except httpx.TimeoutException:
            return WebhookAnswer(None, f"no answer within {self._hello.timeout:g} s", None)
        except httpx.HTTPError as exc:
            return WebhookAnswer(None, f"{type(exc).__name__}: {exc}", None)
        except OSError as exc:
            return WebhookAnswer(None, f"{type(exc).__name__}: {exc}", None)

    async def close(self) -> None:
        await self._client.aclose()


async def _start_of(resp: Any) -> str:
    """The first bytes of a failed answer's body, as text for the delivery's last_error."""
    got = b""
    async for chunk in resp.aiter_raw():
        got += chunk
        if len(got) >= MAX_ERROR_BODY:
            break
    text = got[:MAX_ERROR_BODY].decode("utf-8", "replace")
    return f"HTTP {resp.status_code}" + (f": {' '.join(text.split())}" if text.strip() else "")


async def _setup(
    hello: WebhookHello, send: Callable[[object], None]
) -> tuple[Callable[[Any], None], Callable[[], Any]]:
    from mailgate.logs import setup_logging

    setup_logging(hello.log_level)
    poster = Poster(hello)
    tasks: set[asyncio.Task[None]] = set()

    async def post(rid: int, req: WebhookRequest) -> None:
        try:
            answer = (rid, True, await poster.post(req))
        except Exception as exc:
            log.exception("webhook %s failed", req.msg_id)
            answer = (rid, False, failure(exc))
        send(answer)

    def on_message(request: tuple[int, WebhookRequest]) -> None:
        task = asyncio.create_task(post(*request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def close() -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await poster.close()

    return on_message, close


def main() -> None:
    child_setup()
    try:
        import uvloop
    except ImportError:
        asyncio.run(exchange_messages(_setup))
    else:
        uvloop.run(exchange_messages(_setup))


if __name__ == "__main__":
    main()

"""What the tracking endpoints and the unsubscribe mailbox do: check the token, record.

Tokens are checked here (:mod:`mailgate.events.tokens`) before anything is read or
written, so a guessed or forged one costs one HMAC and gets nothing. Opens and clicks are
recorded before their answer, but not each alone: the requests that arrive while one
write is in flight share the next (:class:`Engagements`), one writer job and one
executemany for all of them, committed without a flush of their own (a lost open is a lost
statistic). When the queue is unavailable the pixel and the redirect are served anyway: the
recipient's click matters more than its record. An unsubscribe is committed durably
before its answer and takes effect in this process's accept path at once, on the other
nodes at their next refresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from mailgate.events.tokens import Signer, Target
from mailgate.exceptions import StoreUnavailable
from mailgate.store import Store
from mailgate.store.tracking import Engagement, Unsubscribed
from mailgate.suppression import SuppressionList

log = logging.getLogger(__name__)

UNSUBSCRIBE_LOCAL = "unsubscribe"


class Engagements:
    """Opens and clicks written in batches: one write in flight, the next one gathering."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[Engagement] = []
        self._done: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def add(self, event: Engagement) -> None:
        """Returns once ``event`` is committed; StoreUnavailable if it could not be."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        done = self._done
        self._pending.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write(), name="mailgate-engagements")
        await asyncio.shield(done)

    async def _write(self) -> None:
        while self._pending:
            batch, done = self._pending, self._done
            self._pending, self._done = [], None
            assert done is not None
            try:
                await self._store.tracking.record(batch)
            except StoreUnavailable as exc:
                done.set_exception(exc)
            except Exception as exc:  # never leave the requests waiting
                log.exception("recording %d opens/clicks failed", len(batch))
                done.set_exception(StoreUnavailable(str(exc)))
            else:
                done.set_result(None)


class Tracking:
    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        bounce_domain: str,
        suppressions: SuppressionList | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._signer = signer
        self._bounce_domain = bounce_domain.lower()
        self._suppressions = suppressions
        self._clock = clock
        self._engagements = Engagements(store)

    async def _record(self, event: Engagement) -> None:
        try:
            await self._engagements.add(event)
        except StoreUnavailable as exc:
            log.warning("%s: %s not recorded: %s", event.message_id, event.type_, exc)

    async def opened(self, token: str, user_agent: str, ip: str) -> bool:
        """Record an open; False for a token that is not ours (answer 404)."""
        target = self._signer.check_open(token)
        if target is None:
            return False
        now = self._clock()
        await self._record(
            Engagement(target.message_id, target.rcpt_idx, "opened", now, user_agent, ip)
        )
        return True

    async def clicked(self, token: str, user_agent: str, ip: str) -> str | None:
        """Record a click; the URL to redirect to (from the signed token only), or None."""
        target = self._signer.check_click(token)
        if target is None:
            return None
        now = self._clock()
        await self._record(
            Engagement(
                target.message_id, target.rcpt_idx, "clicked", now, user_agent, ip, target.url
            )
        )
        return target.url

    def unsubscribe_target(self, token: str) -> Target | None:
        return self._signer.check_unsubscribe(token)

    async def recipient(self, target: Target) -> tuple[str, str] | None:
        """(address, sending domain) an unsubscribe token is for; None if the mail is gone."""
        return await self._store.tracking.target(target.message_id, target.rcpt_idx)

    async def unsubscribe(
        self, token: str, source: str, user_agent: str = "", ip: str = ""
    ) -> Unsubscribed | None:
        """Unsubscribe the token's recipient from its sending domain; None: bad token or
        the mail is no longer known."""
        target = self._signer.check_unsubscribe(token)
        if target is None:
            return None
        data = json.dumps({"user_agent": user_agent[:512], "ip": ip}, separators=(",", ":"))
        done = await self._store.tracking.unsubscribe(
            target.message_id, target.rcpt_idx, self._clock(), source, data
        )
        if done is None:
            return None
        if self._suppressions is not None:
            self._suppressions.unsubscribed(done.address, done.domain)
        if done.new:
            log.info(
                "%s: <%s> unsubscribed from %s (%s)",
                target.message_id,
                done.address,
                done.domain,
                source,
            )
        return done

    def mail_token(self, address: str) -> str | None:
        """The token of an ``unsubscribe+TOKEN@<bounce domain>`` address, else None."""
        local, _, domain = address.rpartition("@")
        if domain.lower().rstrip(".") != self._bounce_domain:
            return None
        prefix, plus, token = local.partition("+")
        if not plus or prefix.lower() != UNSUBSCRIBE_LOCAL:
            return None
        return token if self._signer.check_unsubscribe(token) is not None else None

    async def unsubscribe_by_mail(self, recipients: list[str]) -> int:
        """A mail to the List-Unsubscribe mailto address; how many it unsubscribed."""
        done = 0
        for address in recipients:
            token = self.mail_token(address)
            if token is not None and await self.unsubscribe(token, "mailto") is not None:
                done += 1
        return done

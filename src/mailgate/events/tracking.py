"""What the tracking endpoints and the unsubscribe mailbox do: check the token, record.

Tokens are checked here (:mod:`mailgate.events.tokens`) before anything is read or
written, so a guessed or forged one costs one HMAC and gets nothing. Opens and clicks are
recorded through the store's writer with the group commit (many concurrent requests share
one transaction); an unsubscribe is committed durably before its answer and takes effect
in this process's accept path at once, on the other nodes at their next refresh.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from mailgate.events.tokens import Signer, Target
from mailgate.store import Store
from mailgate.store.tracking import Engagement, Unsubscribed
from mailgate.suppression import SuppressionList

log = logging.getLogger(__name__)

UNSUBSCRIBE_LOCAL = "unsubscribe"


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

    async def opened(self, token: str, user_agent: str, ip: str) -> bool:
        """Record an open; False for a token that is not ours (answer 404)."""
        target = self._signer.check_open(token)
        if target is None:
            return False
        await self._store.tracking.record(
            [
                Engagement(
                    target.message_id, target.rcpt_idx, "opened", self._clock(), user_agent, ip
                )
            ]
        )
        return True

    async def clicked(self, token: str, user_agent: str, ip: str) -> str | None:
        """Record a click; the URL to redirect to (from the signed token only), or None."""
        target = self._signer.check_click(token)
        if target is None:
            return None
        await self._store.tracking.record(
            [
                Engagement(
                    target.message_id,
                    target.rcpt_idx,
                    "clicked",
                    self._clock(),
                    user_agent,
                    ip,
                    target.url,
                )
            ]
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

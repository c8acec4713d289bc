"""One delivery attempt of one message: sign, route, classify, and what to record.

This is the work of the delivery process (:mod:`mailgate.delivery.process`): everything
between a claimed message and the rows that record its outcome, with no SQL. The scheduler
in the relay's process claims the message and records what comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mailgate.config import Settings
from mailgate.delivery.bounce import (
    FailedRecipient,
    dsn_message,
    should_send_dsn,
    verp_address,
)
from mailgate.delivery.classify import is_hard_bounce
from mailgate.delivery.dkim import DkimSigner
from mailgate.delivery.outcome import AttemptRecord, local_failure, update_for
from mailgate.events.rewrite import Options, Personalizer
from mailgate.headers import dkim_signers
from mailgate.logs import fields
from mailgate.memory import TRIMMER
from mailgate.models import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryStatus,
    DeliveryUpdate,
    NewMessage,
    Outcome,
    QueuedMessage,
    Suppression,
)
from mailgate.routing.router import Router
from mailgate.store.bodies import BodyReader

log = logging.getLogger(__name__)


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        signer: DkimSigner | None = None,
        *,
        personalizer: Personalizer | None = None,
        clock: Callable[[], float] = time.time,
        bodies: BodyReader | None = None,
    ) -> None:
        self._settings = settings
        self._bodies = bodies  # made at the first big body
        self._router = router
        self._signer = signer
        self._personalizer = personalizer
        self._clock = clock

    def provider_status(self) -> list[dict[str, Any]]:
        """Each provider's breaker, connections, rate and last results (admin API)."""
        return self._router.health.snapshot(self._router.providers, self._settings.server.node_id)

    async def close(self) -> None:
        await self._router.close()
        if self._bodies is not None:
            await self._bodies.close()
        if self._signer is not None:
            await self._signer.close()

    async def attempt(self, msg: QueuedMessage) -> AttemptRecord:
        if not msg.body_in_store:
            return await self._attempt(msg)
        if self._bodies is None:
            self._bodies = BodyReader(self._settings.database_url)
        msg.raw = await self._bodies.read(msg.id)
        try:
            return await self._attempt(msg)
        finally:
            msg.raw = b""
            TRIMMER.note(msg.size)

    async def _attempt(self, msg: QueuedMessage) -> AttemptRecord:
        started = self._clock()
        options = None
        if msg.tracking is not None and self._personalizer is not None:
            options = Options.of(msg.tracking)
        copies: dict[int, bytes] | None = None
        if options is None:
            data, new_signature = await self._signed(msg)
        else:
            # Each recipient its own copy, signed over its own body: nothing to keep.
            data, new_signature = b"", None
            copies = await self._copies(msg, options)
        # One transaction per route and return path: with VERP each recipient has its own,
        # and so has each recipient of a tracked message (its own copy).
        # A message pinned to a provider goes there whatever the routes say.
        groups: dict[tuple[int | None, str, int], list[ClaimedDelivery]] = {}
        for d in msg.deliveries:
            route = None if msg.provider else self._router.route_for(d.recipient, msg.sender)
            key = (route, self._return_path(msg, d), -1 if copies is None else d.rcpt_idx)
            groups.setdefault(key, []).append(d)
        routed = await asyncio.gather(
            *(
                self._deliver(route, sender, msg, dels, data if copies is None else copies[idx])
                for (route, sender, idx), dels in groups.items()
            )
        )
        now = self._clock()
        pairs = [
            (d, result, failed)
            for dels, (results, history) in zip(groups.values(), routed, strict=True)
            for d, result, failed in zip(dels, results, history, strict=True)
        ]
        signed = dkim_signers(data) if copies is None else ""
        updates = [
            update_for(
                self._settings,
                msg,
                d,
                r,
                failed,
                now,
                direct=self._router.is_direct(r.provider),
                started=started,
                dkim=signed if copies is None else dkim_signers(copies[d.rcpt_idx]),
            )
            for d, r, failed in pairs
        ]
        suppress = [
            Suppression(d.recipient.lower(), "hard_bounce", r.reply.line(), msg.id, now)
            for (d, r, _), u in zip(pairs, updates, strict=True)
            if r.outcome is Outcome.PERMANENT and is_hard_bounce(r.reply, u.category)
        ]
        dsn = self._dsn(msg, pairs, updates, now)
        return AttemptRecord(updates, new_signature, suppress, [dsn] if dsn is not None else [])

    async def _signed(self, msg: QueuedMessage) -> tuple[bytes, bytes | None]:
        """The bytes to send: signed on the first attempt, the same signature after."""
        if msg.dkim is not None:
            return msg.dkim + msg.raw, None
        if self._signer is None:
            return msg.raw, None
        try:
            header = await self._signer.sign_async(msg.raw, msg.sender)
        except Exception:  # an unsignable message still goes out, unsigned and logged
            log.exception("DKIM signing failed for %s; sending unsigned", msg.id)
            return msg.raw, None
        return header + msg.raw, (header or None)

    async def _copies(self, msg: QueuedMessage, options: Options) -> dict[int, bytes]:
        """Each recipient's copy (pixel, links, List-Unsubscribe), DKIM-signed over it."""
        assert self._personalizer is not None
        made = {
            d.rcpt_idx: self._personalizer.personalize(msg.raw, msg.id, d.rcpt_idx, options)
            for d in msg.deliveries
        }
        if self._signer is None:
            return made
        signed = await asyncio.gather(
            *(self._sign_copy(msg, raw) for raw in made.values()), return_exceptions=False
        )
        return dict(zip(made, signed, strict=True))

    async def _sign_copy(self, msg: QueuedMessage, raw: bytes) -> bytes:
        assert self._signer is not None
        try:
            return await self._signer.sign_async(raw, msg.sender) + raw
        except Exception:  # as in _signed: out unsigned, and logged
            log.exception("DKIM signing failed for %s; sending unsigned", msg.id)
            return raw

    def _dsn(
        self,
        msg: QueuedMessage,
        pairs: list[tuple[ClaimedDelivery, AttemptResult, list[AttemptResult]]],
        updates: list[DeliveryUpdate],
        now: float,
    ) -> NewMessage | None:
        """A delivery status notification for the recipients that bounced or failed now.

        Goes to the envelope sender with the null sender, through the same queue; never
        for the null sender or for a DSN or auto-reply (no loops), nor for an attempt-once
        message, whose client learns the result from the API.
        """
        if msg.attempt_once:
            return None
        failures = [
            FailedRecipient(
                recipient=d.recipient,
                status=r.reply.enhanced
                or ("5.0.0" if u.status is DeliveryStatus.BOUNCED else "4.4.7"),
                diagnostic=r.reply.line(),
                remote_mta=r.provider,
                last_attempt=now,
            )
            for (d, r, _), u in zip(pairs, updates, strict=True)
            if u.status in (DeliveryStatus.BOUNCED, DeliveryStatus.FAILED)
        ]
        if not failures or not should_send_dsn(msg.sender, msg.raw):
            return None
        dsn = dsn_message(
            original=msg.raw,
            queue_id=msg.id,
            envelope_sender=msg.sender,
            hostname=self._settings.server.hostname,
            failures=failures,
            now=now,
            arrival_date=msg.created_at,
        )
        if dsn is not None:
            log.info(
                "%s: DSN %s to <%s> for %d recipient(s)",
                msg.id,
                dsn.id,
                msg.sender,
                len(failures),
                extra=fields(event="dsn", message_id=msg.id, dsn_id=dsn.id),
            )
        return dsn

    def _return_path(self, msg: QueuedMessage, d: ClaimedDelivery) -> str:
        """The MAIL FROM upstream: the sender, or a VERP address that names the delivery."""
        if not self._settings.bounces.verp or msg.sender in ("", "<>"):
            return msg.sender
        return verp_address(
            self._settings.bounces.local, self._settings.bounce_domain, msg.id, d.rcpt_idx
        )

    async def _deliver(
        self,
        route: int | None,
        sender: str,
        msg: QueuedMessage,
        dels: list[ClaimedDelivery],
        data: bytes,
    ) -> tuple[list[AttemptResult], list[list[AttemptResult]]]:
        rcpts = [d.recipient for d in dels]
        try:
            routed = await self._router.deliver(route, sender, rcpts, data, provider=msg.provider)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a transport must not lose the delivery
            log.exception("delivery of %s failed unexpectedly", msg.id)
            result = local_failure(f"internal error: {type(exc).__name__}")
            return [result for _ in rcpts], [[] for _ in rcpts]
        return routed.results, routed.history

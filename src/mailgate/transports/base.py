"""The Transport protocol: one delivery in, one classified result per recipient out.

It carries everything the router needs to know about a transport, so the router treats
them all alike: whether acceptance means "delivered" (``direct``), the breaker's ``gate``
and the route's ``tls_policy``. A transport ignores what does not apply to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from mailgate.models import AttemptResult


class Transport(Protocol):
    name: str
    #: Acceptance means "delivered" (the recipient's own server took it), not "sent".
    direct: bool

    async def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        gate: Callable[[], bool] | None = None,
        tls_policy: str | None = None,
    ) -> list[AttemptResult]:
        """Deliver ``data`` to ``recipients``; never raises for delivery problems.

        ``gate``: asked again when the delivery is about to start after waiting for a
        connection; False gives every recipient a SKIPPED result (the provider's breaker
        opened meanwhile). ``tls_policy``: the route's policy for connections the
        transport chooses itself (direct MX), instead of its own default."""
        ...

    async def close(self) -> None: ...

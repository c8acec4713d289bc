"""The Transport protocol: one delivery in, one classified result per recipient out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mailgate.models import AttemptResult


class Transport(Protocol):
    name: str

    async def deliver(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> list[AttemptResult]:
        """Deliver ``data`` to ``recipients``; never raises for delivery problems."""
        ...

    async def close(self) -> None: ...

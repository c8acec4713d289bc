"""DKIM signing in child processes (:mod:`mailgate.workers`): dkimpy's header
canonicalization is Python, so in threads it holds the GIL the event loop needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailgate.workers import WorkerPool, child_setup, serve_blocking

KeySpec = tuple[str, str, str]  # domain, selector, key file


class SigningProcesses(WorkerPool):
    def __init__(self, keys: list[KeySpec], processes: int) -> None:
        super().__init__(__name__, keys, processes, what="DKIM signing process")

    async def sign(self, raw: bytes, envelope_sender: str) -> bytes:
        """The DKIM-Signature header(s) for ``raw``, from the least busy process."""
        header: bytes = await self.call((raw, envelope_sender))
        return header


def _setup(keys: list[KeySpec]) -> Any:
    from mailgate.delivery.dkim import DkimKey, DkimSigner

    signer = DkimSigner([DkimKey.load(d, s, Path(p)) for d, s, p in keys])
    return lambda request: signer.sign(*request)


if __name__ == "__main__":
    from mailgate.logs import setup_logging

    child_setup()
    # Warnings (a message not signed, and why) go to the relay's stderr in its format.
    setup_logging("warning")
    serve_blocking(_setup)

"""A DKIM signing process: ``python -m mailgate.delivery.signing``, started by
:class:`mailgate.delivery.dkim.SigningProcesses` (dkim.py says why processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailgate.delivery.dkim import DkimKey, DkimSigner, KeySpec
from mailgate.logs import setup_logging
from mailgate.worker_child import child_setup, serve_blocking


def _setup(keys: list[KeySpec]) -> Callable[[tuple[bytes, str]], bytes]:
    signer = DkimSigner([DkimKey.load(d, s, Path(p)) for d, s, p in keys])
    return lambda request: signer.sign(*request)


if __name__ == "__main__":
    child_setup()
    # Warnings (a message not signed, and why) go to the relay's stderr in its format.
    setup_logging("warning")
    serve_blocking(_setup)

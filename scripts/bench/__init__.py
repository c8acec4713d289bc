"""mailgate's benchmarks, run through the wrappers in scripts/ (bench-smtp, bench-http, ...).

Each wrapper runs ``python -m bench.<name>`` with scripts/ on PYTHONPATH; the children a
bench starts (the sink, the load clients, the bare HTTP reference) are modules of this
package too (``python -m bench.sink``), so they find it the same way (see processes.py).

Entry points: smtp, http, pg, jobs, retention, ui, dkim_signing, postfix. The rest are
their parts, shared where two benches need the same thing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # for a child to report its port / its sessions
REPLY_TIMEOUT = 30.0  # a stalled server fails a request instead of hanging the run
SCRIPTS = Path(__file__).resolve().parents[1]  # on PYTHONPATH for every child
ROOT = SCRIPTS.parent
SRC = ROOT / "src"


def use_checkout(*, children: bool = False) -> None:
    """Import this checkout's mailgate (not whatever is installed); with ``children``, the
    processes started from here (mailgate serve, its writer process) import it too."""
    sys.path.insert(0, str(SRC))
    if children:
        paths = [str(SRC), os.environ.get("PYTHONPATH")]
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))

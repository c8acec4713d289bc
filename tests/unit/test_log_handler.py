"""The batched log handler at interpreter exit: a record logged while the interpreter
shuts down (a __del__, as aiohttp's unclosed-session warning) is written, and the process
exits. On Python 3.11 starting the flusher thread then waited for ever: a webhook process
whose session was never closed stayed behind its dead relay, for good."""

from __future__ import annotations

import subprocess
import sys

LATE_RECORD = """
import logging
from mailgate.logs import setup_logging
setup_logging("info")

class Late:
    def __del__(self):
        logging.getLogger("late").error("logged at exit")

late = Late()  # collected while the interpreter shuts down
"""


def test_a_record_logged_during_shutdown_is_written_and_the_process_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_RECORD], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert "ERROR late: logged at exit" in done.stderr

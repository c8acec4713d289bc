"""Report lines the SMTP and HTTP benches print alike: the machine in the header, the
table's head, and the end of a scenario's details (mailgate's exit code and log)."""

from __future__ import annotations

import os
import platform
from typing import Any

import uvloop


def print_machine(title: str, loops: str) -> None:
    """The header's first lines: the bench, Python, the event loop (``loops`` says whose),
    and the CPUs this process may use."""
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print()
    print(title)
    print(f"  python        {platform.python_version()} ({platform.python_implementation()})")
    print(f"  event loop    uvloop {uvloop.__version__} ({loops}; mailgate installs it)")
    print(f"  cpus          {cpus} (usable {usable}), {platform.machine()}")


def print_table_head(head: str) -> None:
    print()
    print(head)
    print("-" * len(head))


def print_relay_end(extra: dict[str, Any], problems: list[str]) -> None:
    """A non-zero exit code of mailgate, and the first warnings or errors it logged."""
    if extra.get("exit") not in (None, 0):
        print(f"  mailgate exit code: {extra['exit']}")
    if problems:
        print(f"  mailgate log: {len(problems)} warning/error line(s), first ones:")
        for line in problems[:5]:
            print(f"    {line[:200]}")

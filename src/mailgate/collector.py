"""The cyclic garbage collector, tuned once a serving process has started.

Everything built at start lives as long as the process: frozen, the collector's full
passes no longer walk it (they took 50-90 ms with delivery running and stopped every SMTP
session for that long).

Young-generation collections start once this many more container objects were made than
freed; the default is 700. Fifty concurrent API sends keep a few thousand objects alive,
so at 700 the relay collected every eighth send and walked them all: about 19 us of its
~250 us of CPU per send (gc.callbacks over 8,000 in-process sends), and the delivery
process spent 4 % of its CPU there. At 10,000 a collection comes about once per thousand
sends. Cycles are still collected, only later; the objects freed by reference counting,
nearly all of them, never waited for the collector.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect, freeze what is left, and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])

"""collector.settle: what a serving process does to the garbage collector once started."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from mailgate import collector


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_and_raises_the_young_threshold() -> None:
    old = gc.get_threshold()
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *old[1:])


@pytest.mark.usefixtures("restored")
def test_cycles_are_still_collected_after_settle() -> None:
    collector.settle()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.collect(0)
    assert ref() is None

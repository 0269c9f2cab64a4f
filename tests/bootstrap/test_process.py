"""The collector's tuning a served process applies once built (bootstrap/process.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bootstrap.process import YOUNG_THRESHOLD, settle_long_lived


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test process's collector as it was: the settings are process-wide."""
    threshold = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield
    if frozen == 0:
        gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_what_lives_and_raises_only_the_young_threshold() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    alive = [[index] for index in range(1_000)]  # tracked objects alive at settle time

    settle_long_lived()

    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])


@pytest.mark.usefixtures("restored_collector")
def test_garbage_cycles_made_before_settling_are_freed_not_frozen() -> None:
    gc.unfreeze()

    class Node:
        partner: object = None

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    gone = weakref.ref(first)
    del first, second

    settle_long_lived()

    assert gone() is None

"""The serving process's garbage collector: app objects frozen, young generation collected less
often (api.app.tune_collector_for_serving, run by ``idgraph serve``'s app factory)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from api.app import SERVING_YOUNG_THRESHOLD, tune_collector_for_serving


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the test process's collector back as it was."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield
    gc.set_threshold(*thresholds)
    if not frozen:
        gc.unfreeze()


def test_young_generation_is_collected_less_often_when_the_app_is_served(
    collector: None,
) -> None:
    before = gc.get_threshold()
    tune_collector_for_serving()
    assert gc.get_threshold() == (SERVING_YOUNG_THRESHOLD, before[1], before[2])
    assert SERVING_YOUNG_THRESHOLD > 700  # CPython's default


def test_objects_alive_when_the_app_is_served_are_frozen(collector: None) -> None:
    long_lived = [[n] for n in range(100)]  # lists: always tracked by the collector
    walked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in walked for o in long_lived)
    tune_collector_for_serving()
    # Frozen: in no generation a collection walks (gc.get_objects lists those only).
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in walked for o in long_lived)
    assert gc.get_freeze_count() >= len(long_lived)


def test_cycles_are_still_collected_when_the_app_is_served(collector: None) -> None:
    tune_collector_for_serving()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = len([o for o in gc.get_objects() if isinstance(o, Node)])
    del a, b
    gc.collect()
    assert len([o for o in gc.get_objects() if isinstance(o, Node)]) == alive - 2

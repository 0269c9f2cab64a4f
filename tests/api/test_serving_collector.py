"""The served process's cyclic collector: the built app frozen (api.app.freeze_built_app), the
young threshold raised only while ``/v1/ingest`` batches are handled (api.collector)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from api.app import freeze_built_app
from api.collector import BATCHES, INGEST_YOUNG_THRESHOLD, BatchCollector


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """The test process's thresholds (700 here), put back with its frozen objects after."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    gc.set_threshold(700, thresholds[1], thresholds[2])
    yield gc.get_threshold()
    gc.set_threshold(*thresholds)
    if not frozen:
        gc.unfreeze()


def test_young_threshold_is_raised_when_a_batch_is_handled(
    collector: tuple[int, int, int],
) -> None:
    batches = BatchCollector()
    with batches.handling():
        assert gc.get_threshold() == (INGEST_YOUNG_THRESHOLD, collector[1], collector[2])
    assert gc.get_threshold() == collector


def test_thresholds_are_put_back_only_when_the_last_overlapping_batch_is_done(
    collector: tuple[int, int, int],
) -> None:
    batches = BatchCollector()
    first, second = batches.handling(), batches.handling()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == INGEST_YOUNG_THRESHOLD  # the second is still in flight
    second.__exit__(None, None, None)
    assert gc.get_threshold() == collector


def test_thresholds_are_put_back_when_the_batch_fails(collector: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeError), BATCHES.handling():
        raise RuntimeError
    assert gc.get_threshold() == collector


def test_objects_alive_when_the_app_is_built_are_frozen(
    collector: tuple[int, int, int],
) -> None:
    long_lived = [[n] for n in range(100)]  # lists: always tracked by the collector
    walked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in walked for o in long_lived)
    freeze_built_app()
    # Frozen: in no generation a collection walks (gc.get_objects lists those only).
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in walked for o in long_lived)
    assert gc.get_threshold() == collector  # the threshold is the batches' business only


def test_cycles_are_still_collected_when_a_batch_is_handled(
    collector: tuple[int, int, int],
) -> None:
    class Node:
        other: object = None

    with BATCHES.handling():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = len([o for o in gc.get_objects() if isinstance(o, Node)])
        del a, b
        gc.collect()
        assert len([o for o in gc.get_objects() if isinstance(o, Node)]) == alive - 2


def test_automatic_collection_is_off_while_the_applier_applies_and_back_on_after(
    collector: tuple[int, int, int],
) -> None:
    assert gc.isenabled()
    with BatchCollector().applying():
        assert not gc.isenabled()
        assert gc.get_threshold()[0] == INGEST_YOUNG_THRESHOLD  # handled as a batch, too
    assert gc.isenabled()
    assert gc.get_threshold() == collector


def test_cycles_made_while_applying_are_collected_once_the_apply_is_done(
    collector: tuple[int, int, int],
) -> None:
    class Node:
        other: object = None

    with BatchCollector().applying():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        # Enough containers kept alive to start several young collections, if any could run.
        kept: list[list[int]] = [[] for _ in range(3 * INGEST_YOUNG_THRESHOLD)]
        assert gone() is not None
        del kept
    assert gone() is None  # the young collection after the apply freed the cycle


def test_the_collector_is_enabled_only_when_the_last_overlapping_apply_is_done(
    collector: tuple[int, int, int],
) -> None:
    batches = BatchCollector()
    first, second = batches.applying(), batches.applying()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off_after_an_apply(
    collector: tuple[int, int, int],
) -> None:
    gc.disable()
    try:
        with pytest.raises(RuntimeError), BatchCollector().applying():
            raise RuntimeError
        assert not gc.isenabled()
    finally:
        gc.enable()

"""The ingest bench's floors collect garbage as ``idgraph ingest`` does (a copy: the floor
process imports nothing of idgraph), so the ratios compare work, not collector settings."""

from __future__ import annotations

import gc

import pytest

from bench import ingest
from services import bulk


def test_floors_collect_as_often_as_bulk_ingest() -> None:
    assert ingest.BATCHES_PER_COLLECTION == bulk.BATCHES_PER_COLLECTION


def test_floors_collect_the_young_generation_every_few_batches_when_collection_was_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collections: list[int] = []
    collect = gc.collect

    def counted(generation: int = 2) -> int:
        collections.append(generation)
        return collect(generation)

    monkeypatch.setattr(gc, "collect", counted)
    with ingest._collector_between_batches() as between_batches:
        assert not gc.isenabled()
        for _ in range(2 * ingest.BATCHES_PER_COLLECTION + 1):
            between_batches()
    assert gc.isenabled()
    assert collections == [0, 0]

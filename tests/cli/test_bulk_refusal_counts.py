"""Bulk reports count refused identifiers, not the positions they were sent at: an identifier
named twice in one row and refused is one refused identifier (the API still reports each
position). The old code counted it twice."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest

from identity.errors import IdGraphError
from services.bulk import BATCHES_PER_COLLECTION, ingest_file
from tests.conftest import Api


def test_a_row_naming_a_refused_identifier_twice_counts_it_once(api: Api, tmp_path: Path) -> None:
    blocked = {"type": "cookie_id", "value": "null"}
    rows = [
        {"identifiers": [{"type": "email", "value": "ann@bulk.example"}, blocked, blocked]},
        {"identifiers": [{"type": "email", "value": "bo@bulk.example"}, blocked]},
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({**r, "source": "crm"}) + "\n" for r in rows))

    report = ingest_file(api.container.ingest, source, actor="cli")

    assert report.events == 2
    assert report.refused_identifiers == 2  # one per row, the repeat not counted again
    assert dict(report.refusals) == {("cookie_id", "blocked_value"): 2}


def test_collector_is_restored_when_a_file_was_ingested_or_failed(api: Api, tmp_path: Path) -> None:
    # Bulk ingest runs the cyclic collector only between batches while it reads a file
    # (services.bulk); the process-wide setting must be back afterwards, also when a batch fails.
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps({"identifiers": [{"type": "email", "value": "ann@bulk.example"}]}) + "\n"
    )
    before = gc.get_threshold()
    assert gc.isenabled()

    report = ingest_file(api.container.ingest, source, actor="cli", default_source="crm")
    assert report.events == 1
    assert gc.get_threshold() == before
    assert gc.isenabled()

    api.container.close()  # the store is closed: the batch's commit fails
    with pytest.raises(IdGraphError):
        ingest_file(api.container.ingest, source, actor="cli", default_source="crm")
    assert gc.get_threshold() == before
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off_after_a_file(api: Api, tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps({"identifiers": [{"type": "email", "value": "bo@bulk.example"}]}) + "\n"
    )
    gc.disable()
    try:
        report = ingest_file(api.container.ingest, source, actor="cli", default_source="crm")
        assert report.events == 1
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cycles_made_during_batches_are_collected_every_few_batches(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With automatic collection off while a file is read, the young generation is collected
    # after every BATCHES_PER_COLLECTION-th committed batch (not after each: stop 37), so
    # cyclic garbage made during a batch outlives it by fewer than that many batches.
    every = BATCHES_PER_COLLECTION
    batches = 2 * every + 1
    source = tmp_path / "rows.jsonl"
    source.write_text(
        "".join(
            json.dumps({"identifiers": [{"type": "email", "value": f"c{i}@bulk.example"}]}) + "\n"
            for i in range(batches)
        )
    )
    service = api.container.ingest
    commit = service.commit_prepared
    alive: list[weakref.ref[object]] = []
    during: list[bool] = []
    collections: list[int] = []
    collect = gc.collect

    def counted_collect(generation: int = 2) -> int:
        collections.append(len(alive))  # how many batches had committed (or were committing)
        return collect(generation)

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    def commit_and_make_garbage(events: Any, actor: str) -> Any:
        during.append(gc.isenabled())
        # The cycles of batches committed before the last collection are gone.
        collected = collections[-1] if collections else 0
        assert all(ref() is None for ref in alive[:collected])
        garbage = Node()
        alive.append(weakref.ref(garbage))
        del garbage
        return commit(events, actor)

    monkeypatch.setattr(service, "commit_prepared", commit_and_make_garbage)
    monkeypatch.setattr(gc, "collect", counted_collect)
    report = ingest_file(service, source, actor="cli", default_source="crm", batch_size=1)

    assert report.events == batches
    assert during == [False] * batches  # no automatic collection while the file is read
    # One young collection per `every` committed batches, no more (the cost it saves).
    assert collections == [every, 2 * every]
    assert all(ref() is None for ref in alive[: 2 * every])

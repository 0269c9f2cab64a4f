"""Bulk reports count refused identifiers, not the positions they were sent at: an identifier
named twice in one row and refused is one refused identifier (the API still reports each
position). The old code counted it twice."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from identity.errors import IdGraphError
from services.bulk import ingest_file
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


def test_collector_thresholds_are_restored_when_a_file_was_ingested_or_failed(
    api: Api, tmp_path: Path
) -> None:
    # Bulk ingest runs the cyclic collector less often while it reads a file (services.bulk);
    # the process-wide setting must be back afterwards, also when a batch fails.
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps({"identifiers": [{"type": "email", "value": "ann@bulk.example"}]}) + "\n"
    )
    before = gc.get_threshold()

    report = ingest_file(api.container.ingest, source, actor="cli", default_source="crm")
    assert report.events == 1
    assert gc.get_threshold() == before

    api.container.close()  # the store is closed: the batch's commit fails
    with pytest.raises(IdGraphError):
        ingest_file(api.container.ingest, source, actor="cli", default_source="crm")
    assert gc.get_threshold() == before

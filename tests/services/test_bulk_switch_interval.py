"""While a bulk file is ingested the interpreter's switch interval is short (services.bulk.
_short_gil_turns): the writer thread, which gives the GIL up for every SQLite step and commit,
gets it back from the busy reader thread within 1 ms instead of 5 ms. Restored afterwards, also
when the import fails. The first test fails on the old code (5 ms throughout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from services import bulk
from services.bulk import BulkFileError, ingest_file
from services.ingest import IngestService
from tests.conftest import Api


@pytest.fixture
def service(api: Api) -> IngestService:
    """The app's ingest service (real store, vault and scanner)."""
    return api.container.ingest


def _rows(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"identifiers": [{"type": "email", "value": f"gil{i}@turns.example"}]})
            + "\n"
            for i in range(count)
        )
    )
    return path


def test_the_switch_interval_is_short_while_a_file_is_ingested_and_restored_after(
    service: IngestService, tmp_path: Path
) -> None:
    before = sys.getswitchinterval()
    seen: list[float] = []
    report = ingest_file(
        service,
        _rows(tmp_path / "rows.jsonl", 30),
        actor="test",
        default_source="crm",
        batch_size=10,
        progress=lambda _: seen.append(sys.getswitchinterval()),
    )
    assert report.events == 30
    assert set(seen) == {min(before, bulk.BULK_SWITCH_INTERVAL_S)}
    assert before > bulk.BULK_SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before


def test_the_switch_interval_is_restored_when_the_file_cannot_be_read(
    service: IngestService, tmp_path: Path
) -> None:
    before = sys.getswitchinterval()
    bad = tmp_path / "rows.csv"
    bad.write_text("email,shoe_size\nann@turns.example,42\n")
    with pytest.raises(BulkFileError):
        ingest_file(service, bad, actor="test", default_source="crm")
    assert sys.getswitchinterval() == before

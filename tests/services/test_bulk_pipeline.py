"""Bulk ingest commits a batch on a writer thread while the next batch is read and validated
(services.bulk._CommitPipeline). What must not change: batches commit in file order, each seeing
the ones before; a failed commit stops the file and nothing after it is committed; the report
counts only committed batches. The first test fails on the old code (reading waited for the
commit to return)."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from identity.errors import IdGraphError, StoreUnavailableError
from services import bulk
from services.bulk import ingest_file
from services.ingest import IngestService
from tests.conftest import Api

_TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("bulk_test_trace", default="none")

# The service's own commit_prepared, the batch and the actor: what a wrapper is called with.
Commit = Callable[[Any, str], Any]
Wrapper = Callable[[Commit, Any, str], Any]


@pytest.fixture
def service(api: Api) -> IngestService:
    """The app's ingest service (real store, vault and scanner)."""
    return api.container.ingest


@pytest.fixture
def rows(tmp_path: Path) -> Callable[[int, str], Path]:
    """``rows(count, prefix)``: a JSONL file of ``count`` rows, one new e-mail address each."""

    def write(count: int, prefix: str) -> Path:
        path = tmp_path / "rows.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "identifiers": [{"type": "email", "value": f"{prefix}{i}@pipe.example"}],
                        "source": "crm",
                    }
                )
                + "\n"
                for i in range(count)
            )
        )
        return path

    return write


@pytest.fixture
def around_commit(
    service: IngestService, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Wrapper], None]:
    """``around_commit(wrapper)``: every batch commit of the service goes through
    ``wrapper(commit, batch, actor)``, ``commit`` being the service's own."""

    def install(wrapper: Wrapper) -> None:
        commit = service.commit_prepared
        monkeypatch.setattr(
            service, "commit_prepared", lambda batch, actor: wrapper(commit, batch, actor)
        )

    return install


def test_the_next_batch_is_validated_while_the_previous_one_commits_when_a_file_is_ingested(
    service: IngestService,
    rows: Callable[[int, str], Path],
    around_commit: Callable[[Wrapper], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = rows(4, "a")
    events = service.validation.events
    second_batch_read = threading.Event()
    validated: list[int] = []

    def watched_events(requests: Any, pointers: Any = None) -> Any:
        validated.append(len(requests))
        if sum(validated) >= 3:  # a row of the second batch (batch size 2) is being validated
            second_batch_read.set()
        return events(requests, pointers)

    def slow_first_commit(commit: Commit, batch: Any, actor: str) -> Any:
        if not second_batch_read.is_set():
            # The first batch's commit holds until the reader reached the second batch: with
            # reading and committing in one thread (the old code) it never would.
            assert second_batch_read.wait(timeout=60), "the reader waited for the commit"
        return commit(batch, actor)

    monkeypatch.setattr(bulk, "SCAN_CHUNK_ROWS", 1)
    monkeypatch.setattr(service.validation, "events", watched_events)
    around_commit(slow_first_commit)
    report = ingest_file(service, source, actor="cli", batch_size=2)

    assert report.events == 4
    assert report.outcomes["created"] == 4


def test_batches_commit_in_file_order_each_seeing_the_ones_before_when_pipelined(
    api: Api, service: IngestService, tmp_path: Path
) -> None:
    # Row 3 bridges row 1's and row 2's persons; with batch size 1 each row is its own batch, so
    # the bridge sees both only if every batch before it committed first.
    source = tmp_path / "rows.jsonl"
    rows = [
        [{"type": "email", "value": "x@pipe.example"}],
        [{"type": "cookie_id", "value": "cookie-pipe-1"}],
        [
            {"type": "email", "value": "x@pipe.example"},
            {"type": "cookie_id", "value": "cookie-pipe-1"},
        ],
    ]
    source.write_text("".join(json.dumps({"identifiers": r, "source": "crm"}) + "\n" for r in rows))

    report = ingest_file(service, source, actor="cli", batch_size=1)

    assert [report.outcomes["created"], report.outcomes["merged"]] == [2, 1]
    assert report.merged_persons == 1
    assert api.container.store.stats().persons == 1


def test_a_failed_commit_stops_the_file_and_commits_nothing_after_it(
    api: Api,
    service: IngestService,
    rows: Callable[[int, str], Path],
    around_commit: Callable[[Wrapper], None],
) -> None:
    source = rows(6, "f")
    calls: list[int] = []

    def failing_second_commit(commit: Commit, batch: Any, actor: str) -> Any:
        calls.append(len(batch.events))
        if len(calls) == 2:
            raise StoreUnavailableError("disk gone")
        return commit(batch, actor)

    around_commit(failing_second_commit)
    with pytest.raises(IdGraphError, match="disk gone"):
        ingest_file(service, source, actor="cli", batch_size=2)

    assert calls == [2, 2]  # the third batch was never handed to the writer
    assert api.container.store.stats().identifiers == 2  # only the first batch is stored


def test_a_batch_commits_with_the_callers_context_variables_when_pipelined(
    service: IngestService,
    rows: Callable[[int, str], Path],
    around_commit: Callable[[Wrapper], None],
) -> None:
    source = rows(3, "c")
    seen: list[tuple[str, bool]] = []

    def traced_commit(commit: Commit, batch: Any, actor: str) -> Any:
        seen.append((_TRACE.get(), threading.current_thread() is threading.main_thread()))
        return commit(batch, actor)

    around_commit(traced_commit)
    token = _TRACE.set("file-1")
    try:
        report = ingest_file(service, source, actor="cli", batch_size=1)
    finally:
        _TRACE.reset(token)

    assert report.events == 3
    assert seen == [("file-1", False)] * 3  # on the writer thread, in the caller's context


def test_a_batch_ends_at_its_event_count_or_once_its_identifiers_and_facts_reach_the_cap(
    service: IngestService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows 0-3: one identifier each; rows 4-7: two identifiers and two traits each (4 values).
    # With at most 5 events or 8 values a batch: rows 0-4 (4 + 4 = 8 values), then 5-6 (8),
    # then 7. Without the value cap: 5 and 3 events.
    source = tmp_path / "rows.jsonl"
    rows: list[dict[str, Any]] = [
        {"identifiers": [{"type": "email", "value": f"narrow{i}@pipe.example"}]} for i in range(4)
    ]
    rows += [
        {
            "identifiers": [
                {"type": "email", "value": f"wide{i}@pipe.example"},
                {"type": "cookie_id", "value": f"cookie-wide-{i}"},
            ],
            "traits": {"favourite_category": "books", "city": "Lyon"},
        }
        for i in range(4)
    ]
    source.write_text("".join(json.dumps({**r, "source": "crm"}) + "\n" for r in rows))
    prepare = service.prepare
    batches: list[int] = []

    def counted(events: Any) -> Any:
        batches.append(len(events))
        return prepare(events)

    monkeypatch.setattr(service, "prepare", counted)
    capped = ingest_file(service, source, actor="cli", batch_size=5, batch_values=8)
    assert batches == [5, 2, 1]
    assert capped.events == 8
    assert capped.facts_stored == 8

    batches.clear()
    ingest_file(service, source, actor="cli", batch_size=5)  # the default cap: 40,000
    assert batches == [5, 3]

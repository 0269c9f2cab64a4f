"""Bulk ingest commits a batch on a writer thread while the next batch is read and validated
(services.bulk._CommitPipeline). What must not change: batches commit in file order, each seeing
the ones before; a failed commit stops the file and nothing after it is committed; the report
counts only committed batches. The first test fails on the old code (reading waited for the
commit to return)."""

from __future__ import annotations

import contextvars
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from identity.errors import IdGraphError, StoreUnavailableError
from services import bulk
from services.bulk import ingest_file
from tests.conftest import Api

_TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("bulk_test_trace", default="none")


def _rows(path: Path, count: int, prefix: str) -> Path:
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


def test_the_next_batch_is_validated_while_the_previous_one_commits_when_a_file_is_ingested(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _rows(tmp_path / "rows.jsonl", 4, "a")
    service = api.container.ingest
    commit, events = service.commit_prepared, service.events
    second_batch_read = threading.Event()
    validated: list[int] = []

    def watched_events(requests: Any, pointers: Any = None) -> Any:
        validated.append(len(requests))
        if sum(validated) >= 3:  # a row of the second batch (batch size 2) is being validated
            second_batch_read.set()
        return events(requests, pointers)

    def slow_first_commit(batch: Any, actor: str) -> Any:
        if not second_batch_read.is_set():
            # The first batch's commit holds until the reader reached the second batch: with
            # reading and committing in one thread (the old code) it never would.
            assert second_batch_read.wait(timeout=60), "the reader waited for the commit"
        return commit(batch, actor)

    monkeypatch.setattr(bulk, "SCAN_CHUNK_ROWS", 1)
    monkeypatch.setattr(service, "events", watched_events)
    monkeypatch.setattr(service, "commit_prepared", slow_first_commit)
    report = ingest_file(service, source, actor="cli", batch_size=2)

    assert report.events == 4
    assert report.outcomes["created"] == 4


def test_batches_commit_in_file_order_each_seeing_the_ones_before_when_pipelined(
    api: Api, tmp_path: Path
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

    report = ingest_file(api.container.ingest, source, actor="cli", batch_size=1)

    assert [report.outcomes["created"], report.outcomes["merged"]] == [2, 1]
    assert report.merged_persons == 1
    assert api.container.store.stats().persons == 1


def test_a_failed_commit_stops_the_file_and_commits_nothing_after_it(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _rows(tmp_path / "rows.jsonl", 6, "f")
    service = api.container.ingest
    commit = service.commit_prepared
    calls: list[int] = []

    def failing_second_commit(batch: Any, actor: str) -> Any:
        calls.append(len(batch.events))
        if len(calls) == 2:
            raise StoreUnavailableError("disk gone")
        return commit(batch, actor)

    monkeypatch.setattr(service, "commit_prepared", failing_second_commit)
    with pytest.raises(IdGraphError, match="disk gone"):
        ingest_file(service, source, actor="cli", batch_size=2)

    assert calls == [2, 2]  # the third batch was never handed to the writer
    assert api.container.store.stats().identifiers == 2  # only the first batch is stored


def test_a_batch_commits_with_the_callers_context_variables_when_pipelined(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _rows(tmp_path / "rows.jsonl", 3, "c")
    service = api.container.ingest
    commit = service.commit_prepared
    seen: list[tuple[str, bool]] = []

    def traced_commit(batch: Any, actor: str) -> Any:
        seen.append((_TRACE.get(), threading.current_thread() is threading.main_thread()))
        return commit(batch, actor)

    monkeypatch.setattr(service, "commit_prepared", traced_commit)
    token = _TRACE.set("file-1")
    try:
        report = ingest_file(service, source, actor="cli", batch_size=1)
    finally:
        _TRACE.reset(token)

    assert report.events == 3
    assert seen == [("file-1", False)] * 3  # on the writer thread, in the caller's context

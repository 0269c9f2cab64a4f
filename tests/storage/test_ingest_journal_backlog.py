"""The ingest journal's backlog (queued events, oldest batch) is kept by triggers in the journal
file: right after appends, applies, failures, a rolled-back apply and a reopen, and read in a
fixed number of steps however long the journal is."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity.store.sqlite import SqliteGraphStore
from storage import journal as journal_module
from storage.journal import (
    FinishedJob,
    JournalRaceError,
    QueuedBatch,
    SqliteIngestJournal,
    journal_path,
)

LIMIT = 1_000_000


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "graph.sqlite3"
    SqliteGraphStore(path).close()  # a real graph file (meta table, graph schema)
    return path


@pytest.fixture
def journal(graph_file: Path) -> Iterator[SqliteIngestJournal]:
    opened = SqliteIngestJournal(journal_path(graph_file), graph_file)
    yield opened
    opened.close()


def _append(journal: SqliteIngestJournal, first: int, sizes: list[int]) -> None:
    for n, events in enumerate(sizes, start=first):
        journal.append(
            f"job-{n}", "key_a", events, "seal", b"\0" * 64, 1_000 + n,
            max_events=LIMIT, retry_after_s=1,
        )  # fmt: skip


def _summed(path: Path) -> tuple[int, int | None]:
    with sqlite3.connect(path) as conn:
        count, first = conn.execute(
            "SELECT coalesce(sum(events), 0), (SELECT queued_ms FROM ingest_journal "
            "ORDER BY seq LIMIT 1) FROM ingest_journal"
        ).fetchone()
    conn.close()
    return int(count), first


def _done(batches: list[QueuedBatch]) -> list[FinishedJob]:
    return [FinishedJob(b.seq, b.job_id, "applied", "{}") for b in batches]


def _apply(journal: SqliteIngestJournal, graph: Path, batches: list[QueuedBatch]) -> None:
    """What the applier does: record_applied() inside a write transaction of another connection
    to the graph file (the store's), then settle() once it committed."""
    conn = sqlite3.connect(graph, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        journal.record_applied(conn, _done(batches), 5_000, 60_000)
        conn.execute("COMMIT")
    finally:
        conn.close()
    journal.settle(_done(batches), 5_000, 60_000)


def test_backlog_is_the_queued_sum_when_batches_are_appended_applied_failed_and_reopened(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    journal_file = journal_path(graph_file)
    assert journal.backlog() == (0, None)
    _append(journal, 0, [50, 3, 7, 1, 20])
    assert journal.backlog() == (81, 1_000) == _summed(journal_file)

    _apply(journal, graph_file, journal.queued(53))  # the first two batches
    assert journal.backlog() == (28, 1_002) == _summed(journal_file)

    journal.fail(_done(journal.queued(7)), 6_000, 60_000)
    assert journal.backlog() == (21, 1_003) == _summed(journal_file)

    # A failure that finds a batch gone writes nothing: the count stays.
    stale = journal.queued(LIMIT)
    journal.fail(_done(stale[:1]), 6_500, 60_000)
    with pytest.raises(JournalRaceError):
        journal.fail(_done(stale), 7_000, 60_000)
    assert journal.backlog() == (20, 1_004) == _summed(journal_file)

    journal.close()
    reopened = SqliteIngestJournal(journal_file, graph_file)
    try:
        assert reopened.backlog() == (20, 1_004)
        _append(reopened, 10, [5])
        assert reopened.queued_events() == 25
        _apply(reopened, graph_file, reopened.queued(LIMIT))
        assert reopened.backlog() == (0, None) == _summed(journal_file)
    finally:
        reopened.close()


def test_a_full_journal_is_refused_by_the_kept_count_when_the_bound_would_be_passed(
    journal: SqliteIngestJournal,
) -> None:
    _append(journal, 0, [60, 30])
    with pytest.raises(journal_module.JournalFullError) as refused:
        journal.append("job-x", "key_a", 11, "seal", b"", 1, max_events=100, retry_after_s=3)
    assert refused.value.queued == 90
    journal.append("job-y", "key_a", 10, "seal", b"", 1, max_events=100, retry_after_s=3)
    assert journal.queued_events() == 100


def _steps(journal: SqliteIngestJournal) -> int:
    """SQLite VM instructions one backlog() runs (the progress handler is called per step)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = journal._conn  # the journal's own connection: what backlog() runs on
    conn.set_progress_handler(count, 1)
    try:
        journal.backlog()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def test_backlog_takes_the_same_steps_when_the_journal_is_long(
    journal: SqliteIngestJournal,
) -> None:
    # Deterministic, not timed: sum(events) visited every queued row on every submit and every
    # applier look (2,000 batches: ~15 ms CPU); the kept count is one primary-key read.
    _append(journal, 0, [50] * 3)
    short = _steps(journal)
    _append(journal, 3, [50] * 2_000)
    assert journal.backlog() == (100_150, 1_000)
    assert _steps(journal) == short

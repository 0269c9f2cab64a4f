"""The ingest journal's backlog (queued events, oldest batch) is kept by triggers: right after
appends, applies, failures, a rolled-back apply and a reopen, seeded when a version-1 file is
opened, and read in a fixed number of steps however long the journal is."""

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
)

LIMIT = 1_000_000


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "graph.sqlite3"
    SqliteGraphStore(path).close()  # a real graph file (meta table, graph schema)
    return path


@pytest.fixture
def journal(graph_file: Path) -> Iterator[SqliteIngestJournal]:
    opened = SqliteIngestJournal(graph_file)
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


def _apply_on_another_connection(path: Path, batches: list[QueuedBatch]) -> None:
    """What the applier does: finish() inside a write transaction of another connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        SqliteIngestJournal.finish(conn, _done(batches), 5_000, 60_000)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_backlog_is_the_queued_sum_when_batches_are_appended_applied_failed_and_reopened(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    assert journal.backlog() == (0, None)
    _append(journal, 0, [50, 3, 7, 1, 20])
    assert journal.backlog() == (81, 1_000) == _summed(graph_file)

    _apply_on_another_connection(graph_file, journal.queued(53))  # the first two batches
    assert journal.backlog() == (28, 1_002) == _summed(graph_file)

    journal.fail(_done(journal.queued(7)), 6_000, 60_000)
    assert journal.backlog() == (21, 1_003) == _summed(graph_file)

    # An apply that finds a batch gone rolls back whole: the count with it.
    stale = journal.queued(LIMIT)
    _apply_on_another_connection(graph_file, stale[:1])
    conn = sqlite3.connect(graph_file, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(JournalRaceError):
        SqliteIngestJournal.finish(conn, _done(stale), 7_000, 60_000)
    conn.execute("ROLLBACK")
    conn.close()
    assert journal.backlog() == (20, 1_004) == _summed(graph_file)

    journal.close()
    reopened = SqliteIngestJournal(graph_file)
    try:
        assert reopened.backlog() == (20, 1_004)
        _append(reopened, 10, [5])
        assert reopened.queued_events() == 25
        _apply_on_another_connection(graph_file, reopened.queued(LIMIT))
        assert reopened.backlog() == (0, None) == _summed(graph_file)
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


def test_a_version_1_journal_is_migrated_with_its_queued_events_counted_when_opened(
    graph_file: Path,
) -> None:
    # A version-1 file: the two tables with batches queued, no count table, no triggers.
    conn = sqlite3.connect(graph_file, isolation_level=None)
    for statement in journal_module._SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO ingest_journal (job_id, owner, events, seal_key, sealed, queued_ms) "
        "VALUES (?, 'key_a', ?, 'seal', x'00', ?)",
        [("old-1", 40, 500), ("old-2", 2, 400)],
    )
    conn.execute("INSERT INTO meta (key, value) VALUES ('ingest_journal_version', '1')")
    conn.close()

    migrated = SqliteIngestJournal(graph_file)
    try:
        assert migrated.backlog() == (42, 500)  # the first in line, queued at 500
        _append(migrated, 0, [8])
        assert migrated.queued_events() == 50 == _summed(graph_file)[0]
    finally:
        migrated.close()
    with sqlite3.connect(graph_file) as conn:
        version = conn.execute(
            "SELECT value FROM meta WHERE key = 'ingest_journal_version'"
        ).fetchone()
    conn.close()
    assert version == ("2",)
    again = SqliteIngestJournal(graph_file)  # the seed leaves a kept count alone
    try:
        assert again.queued_events() == 50
    finally:
        again.close()


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

"""The ingest journal in its own SQLite file: accepting never takes the graph file's write lock;
the graph file decides what was applied (markers + watermark in the apply transaction), so a
batch is applied at most once and a job whose apply committed is settled from its marker after a
crash; a graph file with the version 1 or 2 journal tables has them moved out on open."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity.store.sqlite import SqliteGraphStore
from storage.journal import (
    FinishedJob,
    JournalRaceError,
    QueuedBatch,
    SqliteIngestJournal,
    journal_path,
)

LIMIT = 1_000_000
SEALED = b"SEALED-BATCH-BYTES-" * 8  # stands for a sealed batch: found by its bytes

# The journal's tables as versions 1 and 2 kept them in the graph file (frozen copies).
V1_SCHEMA = """
CREATE TABLE ingest_journal (
    seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    events INTEGER NOT NULL, seal_key TEXT NOT NULL, sealed BLOB NOT NULL,
    queued_ms INTEGER NOT NULL);
CREATE TABLE ingest_jobs (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, events INTEGER NOT NULL,
    queued_ms INTEGER NOT NULL, finished_ms INTEGER, expires_ms INTEGER, result TEXT
) WITHOUT ROWID;
CREATE INDEX ingest_jobs_expiry ON ingest_jobs (expires_ms) WHERE expires_ms IS NOT NULL;
"""
V2_BACKLOG = """
CREATE TABLE ingest_journal_backlog (
    id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL);
INSERT INTO ingest_journal_backlog (id, events) VALUES (1, 0);
CREATE TRIGGER ingest_journal_backlog_in AFTER INSERT ON ingest_journal
BEGIN UPDATE ingest_journal_backlog SET events = events + new.events WHERE id = 1; END;
CREATE TRIGGER ingest_journal_backlog_out AFTER DELETE ON ingest_journal
BEGIN UPDATE ingest_journal_backlog SET events = events - old.events WHERE id = 1; END;
"""


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


def _append(journal: SqliteIngestJournal, names: list[str], events: int = 5) -> None:
    for n, name in enumerate(names):
        journal.append(
            name, "key_a", events, "seal", SEALED, 1_000 + n, max_events=LIMIT, retry_after_s=1
        )


def _done(batches: list[QueuedBatch]) -> list[FinishedJob]:
    return [FinishedJob(b.seq, b.job_id, "applied", f'{{"job":"{b.job_id}"}}') for b in batches]


def _commit_apply(
    journal: SqliteIngestJournal, graph: Path, batches: list[QueuedBatch], now_ms: int = 5_000
) -> None:
    """The apply transaction's part (the store's write connection): markers + watermark."""
    conn = sqlite3.connect(graph, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        journal.record_applied(conn, _done(batches), now_ms, 60_000)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _graph(graph: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(graph) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def _status(journal: SqliteIngestJournal, job_id: str) -> tuple[str, str | None]:
    record = journal.job(job_id, 0)
    assert record is not None
    return record.status, record.result


def test_a_batch_is_accepted_when_another_connection_holds_the_graph_write_lock(
    graph_file: Path,
) -> None:
    journal = SqliteIngestJournal(journal_path(graph_file), graph_file, busy_timeout_ms=200)
    holder = sqlite3.connect(graph_file, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # what a long apply transaction holds
        _append(journal, ["job-a"])
        assert journal.backlog() == (5, 1_000)
        assert _status(journal, "job-a") == ("queued", None)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        journal.close()


def test_a_batch_is_applied_once_when_two_appliers_read_the_same_queue(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    other = SqliteIngestJournal(journal_path(graph_file), graph_file)  # a second process
    try:
        _append(journal, ["job-a", "job-b"])
        mine, theirs = journal.queued(LIMIT), other.queued(LIMIT)
        _commit_apply(journal, graph_file, mine)
        # The other one applies the same batches before this one settled: refused, so its
        # transaction rolls back (nothing written twice).
        conn = sqlite3.connect(graph_file, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(JournalRaceError):
            other.record_applied(conn, _done(theirs), 6_000, 60_000)
        conn.execute("ROLLBACK")
        conn.close()
        # It settles them from the markers; this one's own settle then changes nothing.
        assert other.reconcile() == 2
        assert journal.backlog() == (0, None)
        assert _status(journal, "job-a") == ("applied", '{"job":"job-a"}')
        journal.settle(_done(mine), 9_000, 60_000)
        record = journal.job("job-b", 0)
        assert record is not None
        assert (record.status, record.finished_ms) == ("applied", 5_000)
        assert _graph(graph_file, "SELECT count(*) FROM ingest_applied") == [(0,)]
    finally:
        other.close()


def test_jobs_whose_apply_committed_are_settled_when_the_journal_is_reopened(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    _append(journal, ["job-a", "job-b", "job-c"])
    applied = journal.queued(10)  # the first two
    _commit_apply(journal, graph_file, applied)
    journal.close()  # a crash between the graph's commit and the journal's settle

    reopened = SqliteIngestJournal(journal_path(graph_file), graph_file)
    try:
        assert _status(reopened, "job-a") == ("applied", '{"job":"job-a"}')
        assert _status(reopened, "job-b") == ("applied", '{"job":"job-b"}')
        assert _status(reopened, "job-c") == ("queued", None)  # no marker: still queued
        assert [b.job_id for b in reopened.queued(LIMIT)] == ["job-c"]
        assert reopened.backlog() == (5, 1_002)
        assert _graph(graph_file, "SELECT count(*) FROM ingest_applied") == [(0,)]
    finally:
        reopened.close()


def test_markers_are_deleted_by_the_next_apply_transaction_when_settled(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    _append(journal, ["job-a"])
    first = journal.queued(LIMIT)
    _commit_apply(journal, graph_file, first)
    journal.settle(_done(first), 5_000, 60_000)
    # Settled, its marker still in the graph file (no graph commit of its own)...
    assert _graph(graph_file, "SELECT job_id FROM ingest_applied") == [("job-a",)]
    _append(journal, ["job-b"])
    second = journal.queued(LIMIT)
    _commit_apply(journal, graph_file, second)
    # ...until the next apply transaction deletes it.
    assert _graph(graph_file, "SELECT job_id FROM ingest_applied") == [("job-b",)]
    assert _graph(
        graph_file, "SELECT value FROM meta WHERE key = 'ingest_journal_applied_seq'"
    ) == [(str(second[0].seq),)]


def test_a_new_journal_numbers_its_batches_above_the_graphs_watermark_when_opened(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    _append(journal, [f"job-{n}" for n in range(3)])
    batches = journal.queued(LIMIT)
    _commit_apply(journal, graph_file, batches)
    journal.settle(_done(batches), 5_000, 60_000)
    journal.close()
    journal_path(graph_file).unlink()  # the journal file lost; the graph remembers seq 3

    fresh = SqliteIngestJournal(journal_path(graph_file), graph_file)
    try:
        _append(fresh, ["job-new"])
        (batch,) = fresh.queued(LIMIT)
        assert batch.seq == 4
        _commit_apply(fresh, graph_file, [batch])  # not refused as applied already
    finally:
        fresh.close()


def _old_graph(graph: Path, version: int) -> None:
    """Give ``graph`` the journal tables of ``version`` (1 or 2) with two batches queued (seq 7
    and 9) and a finished job, as an older idgraph left them."""
    conn = sqlite3.connect(graph, isolation_level=None)
    conn.execute("PRAGMA secure_delete=ON")
    conn.executescript(V1_SCHEMA + (V2_BACKLOG if version == 2 else ""))
    conn.executemany(
        "INSERT INTO ingest_journal (seq, job_id, owner, events, seal_key, sealed, queued_ms) "
        "VALUES (?, ?, 'key_a', ?, 'seal', ?, ?)",
        [(7, "old-1", 40, SEALED, 500), (9, "old-2", 2, SEALED, 600)],
    )
    conn.executemany(
        "INSERT INTO ingest_jobs (job_id, owner, status, events, queued_ms, finished_ms, "
        "expires_ms, result) VALUES (?, 'key_a', ?, ?, ?, ?, ?, ?)",
        [
            ("old-1", "queued", 40, 500, None, None, None),
            ("old-2", "queued", 2, 600, None, None, None),
            ("old-0", "applied", 3, 400, 450, 10**13, '{"results":[]}'),
        ],
    )
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('ingest_journal_version', ?)", (str(version),)
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _journal_objects(path: Path) -> list[tuple[object, ...]]:
    return _graph(
        path,
        "SELECT type, name FROM sqlite_master WHERE name LIKE 'ingest_j%' ORDER BY type, name",
    )


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_journal_is_moved_out_of_the_graph_file_when_opened(
    graph_file: Path, version: int
) -> None:
    _old_graph(graph_file, version)
    assert SEALED in graph_file.read_bytes()

    journal = SqliteIngestJournal(journal_path(graph_file), graph_file)
    try:
        assert [(b.seq, b.job_id, b.sealed) for b in journal.queued(LIMIT)] == [
            (7, "old-1", SEALED),
            (9, "old-2", SEALED),
        ]
        assert journal.backlog() == (42, 500)
        assert _status(journal, "old-0") == ("applied", '{"results":[]}')
        assert _status(journal, "old-2") == ("queued", None)
        _append(journal, ["new-1"], events=8)  # counted by the moved triggers, numbered after
        assert journal.queued_events() == 50
        assert journal.queued(LIMIT)[-1].seq == 10
    finally:
        journal.close()
    assert _journal_objects(graph_file) == []  # tables, triggers and index gone from the graph
    assert _graph(graph_file, "SELECT value FROM meta WHERE key = 'ingest_journal_version'") == [
        ("3",)
    ]
    with sqlite3.connect(graph_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert SEALED not in graph_file.read_bytes()  # deleted with secure_delete: zeroed
    assert ("trigger", "ingest_journal_backlog_in") in _journal_objects(journal_path(graph_file))


def test_a_move_interrupted_after_the_journal_commit_adds_nothing_twice_when_reopened(
    graph_file: Path,
) -> None:
    _old_graph(graph_file, 2)
    before = graph_file.read_bytes()  # checkpointed: the whole graph is in the main file
    SqliteIngestJournal(journal_path(graph_file), graph_file).close()
    # The journal file has the rows (its commit), the graph file has them again (as if the
    # crash came before the graph's commit): the rows exist in both files.
    for leftover in graph_file.parent.glob("graph.sqlite3-*"):
        leftover.unlink()
    graph_file.write_bytes(before)

    journal = SqliteIngestJournal(journal_path(graph_file), graph_file)
    try:
        assert [b.job_id for b in journal.queued(LIMIT)] == ["old-1", "old-2"]
        assert journal.backlog() == (42, 500)
    finally:
        journal.close()
    assert _journal_objects(graph_file) == []


def test_batches_the_graph_applied_are_not_queued_again_when_an_older_journal_is_restored(
    graph_file: Path, journal: SqliteIngestJournal
) -> None:
    _append(journal, ["job-a", "job-b"])
    journal.close()  # the last connection: checkpointed, the whole journal in its main file
    older = journal_path(graph_file).read_bytes()
    again = SqliteIngestJournal(journal_path(graph_file), graph_file)
    batches = again.queued(LIMIT)
    _commit_apply(again, graph_file, batches)
    again.settle(_done(batches), 5_000, 60_000)
    _append(again, ["job-c"])
    _commit_apply(again, graph_file, again.queued(LIMIT))  # deletes the markers of a and b
    again.close()
    assert _graph(graph_file, "SELECT job_id FROM ingest_applied") == [("job-c",)]
    journal_path(graph_file).write_bytes(older)  # a copy from before the apply, restored

    restored = SqliteIngestJournal(journal_path(graph_file), graph_file)
    try:
        assert restored.backlog() == (0, None)  # a and b were applied: not queued again
        assert _status(restored, "job-a") == ("applied", '{"error":"ResultUnavailable"}')
        _append(restored, ["job-d"])
        assert restored.queued(LIMIT)[0].seq == 4  # above the watermark (job-c's 3)
    finally:
        restored.close()

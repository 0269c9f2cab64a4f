"""The durable ingest journal: batches accepted with ``Prefer: respond-async``, until applied.

**Its own SQLite file** (``<graph>-ingest-journal.sqlite3`` beside the graph file, see
:func:`journal_path`), so that accepting a batch takes the journal file's write lock only, never
the graph file's: the applier holds the graph's write lock for a transaction of up to ~10k events
while requests keep being accepted. Before version 3 the journal was two tables in the graph file
(apply and delete in one transaction); those writes shared the graph's single writer with the
applier, which kept its transactions at ~1,000-1,500 events (2.5x the bulk path's bytes).

Tables of the journal file:

* ``ingest_journal``: one row per queued batch, its events **sealed** by the caller (AES-GCM
  under a vault data key; this module never sees a raw identifier, see
  :mod:`services.async_ingest`). ``seq`` is ``AUTOINCREMENT``: never reused, so the graph's
  applied watermark (below) orders every batch ever queued. The file has ``secure_delete`` on:
  a deleted row's bytes are zeroed in its page, and what an old WAL frame still holds is
  ciphertext.
* ``ingest_jobs``: one row per job, its status and, once finished, its per-event outcomes
  (counts, identifier types, JSON pointers and reasons: no identifier value, no person id),
  kept until ``expires_ms``.
* ``ingest_journal_backlog``: the queued event count, kept by triggers (see
  :data:`_BACKLOG_SCHEMA`).

Two files cannot commit together (SQLite's multi-file commit is not atomic in WAL mode), so the
apply protocol makes the **graph file decide** whether a batch was applied:

1. Accept: one journal-file transaction (row + job, fsync'd) before the 202.
2. Apply: one graph transaction applies the oldest queued batches and, in the same transaction
   (:meth:`SqliteIngestJournal.record_applied`, the engine's ``then`` hook), writes an
   **applied marker** per job (its seq, id and result) into ``ingest_applied`` and raises the
   graph's applied watermark (``meta.ingest_journal_applied_seq``, the highest seq applied) ---
   refusing (:class:`JournalRaceError`, rolled back) any batch at or below it: a batch is
   applied at most once, even by two processes reading the same queue.
3. Settle (:meth:`SqliteIngestJournal.settle`), after that commit: one journal-file transaction
   deletes the batches' rows and stores the jobs' results. The markers are deleted by the next
   apply transaction (no graph commit of their own).
4. On open (and when an apply meets the watermark), :meth:`SqliteIngestJournal.reconcile`
   settles every job that has a marker (a crash between 2 and 3, or another process's apply)
   and then deletes the markers. A job without a marker stays queued and is applied.

Journal file version 3 (``meta.schema_version`` of the journal file). Opening a graph file that
still holds the version 1 or 2 tables moves them here (queued batches keep their seq, jobs their
results, the backlog triggers are recreated here and the count follows the moved rows) and
drops them from the graph file, in the graph file's write transaction, so no older process
appends in between; a crash half-way leaves rows in both files, and the next open moves them
again (``INSERT OR IGNORE``: nothing twice). The graph's own ``schema_version`` is not changed:
``ingest_applied`` and the watermark are not part of the graph (a copy or an export ignores
them); ``meta.ingest_journal_version`` in the graph file says 3.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from identity.errors import IdGraphError, StoreUnavailableError
from storage.sqlite import (
    GRAPH_WAL_AUTOCHECKPOINT_PAGES,
    connect_private,
    open_migrated,
    transaction,
)

JOURNAL_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingest_journal (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order, never reused (the watermark)
    job_id    TEXT NOT NULL UNIQUE,
    owner     TEXT NOT NULL,                -- the API key id that submitted it (not a secret)
    events    INTEGER NOT NULL,
    seal_key  TEXT NOT NULL,                -- the vault owner whose data key sealed them
    sealed    BLOB NOT NULL,                -- the validated events, AES-GCM sealed
    queued_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_jobs (
    job_id      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    status      TEXT NOT NULL,              -- queued | applied | failed
    events      INTEGER NOT NULL,
    queued_ms   INTEGER NOT NULL,
    finished_ms INTEGER,
    expires_ms  INTEGER,                    -- finished jobs only: when the result is dropped
    result      TEXT                        -- JSON: outcomes or the failure (no identifier)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ingest_jobs_expiry ON ingest_jobs (expires_ms)
    WHERE expires_ms IS NOT NULL;
"""


# The queued event count, one row kept right by triggers in the same transaction as every insert
# and delete of a journal row, whichever connection or process runs it: a crash rolls the count
# back with the rows, a restart reads it as it is. Why not sum(events) per submit: that scans
# every queued row (their sealed events share the pages), 15 ms CPU at 2,000 queued batches of
# 50 events (the default limit, 100k events) and ~26 ms at 100,000 one-event batches, inside the
# submit's write transaction. Created (and seeded from the rows there, none on a new file) in the
# opening transaction; rows moved from a version-2 graph file are counted by the insert trigger.
_BACKLOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_journal_backlog (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    events INTEGER NOT NULL
);
INSERT OR IGNORE INTO ingest_journal_backlog (id, events)
    SELECT 1, coalesce(sum(events), 0) FROM ingest_journal;
CREATE TRIGGER IF NOT EXISTS ingest_journal_backlog_in AFTER INSERT ON ingest_journal
BEGIN
    UPDATE ingest_journal_backlog SET events = events + new.events WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS ingest_journal_backlog_out AFTER DELETE ON ingest_journal
BEGIN
    UPDATE ingest_journal_backlog SET events = events - old.events WHERE id = 1;
END;
"""

# In the graph file: one marker per job the graph applied and the journal has not settled yet
# (result zlib-compressed: it is written here and zeroed at the delete, secure_delete).
_GRAPH_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_applied (
    seq         INTEGER PRIMARY KEY,        -- the journal row's seq
    job_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    finished_ms INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    result      BLOB NOT NULL               -- zlib(result JSON)
);
"""

_WATERMARK = "ingest_journal_applied_seq"
# What reconcile() records for a batch the graph applied whose result is gone (see there).
_RESULT_UNAVAILABLE = '{"error":"ResultUnavailable"}'
_LOST_KEEP_MS = 24 * 3600 * 1000
_QUEUED_EVENTS = "SELECT events FROM ingest_journal_backlog WHERE id = 1"


def journal_path(graph: Path) -> Path:
    """Where the ingest journal of the graph file ``graph`` lives: beside it, named after it
    (``graph.sqlite3`` -> ``graph-ingest-journal.sqlite3``), so two graph files in one
    directory never share a journal (each graph's watermark numbers its own journal's rows)."""
    return graph.with_name(f"{graph.stem}-ingest-journal{graph.suffix or '.sqlite3'}")


class JournalFullError(IdGraphError):
    """The journal holds as many queued events as it may (``IDGRAPH_INGEST_JOURNAL_MAX_EVENTS``):
    the batch is not accepted; the caller retries after ``retry_after_s`` (503 + Retry-After)."""

    code = "ingest-journal-full"

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the ingest journal is full ({queued} of {limit} events queued); retry later"
        )
        self.queued = queued
        self.limit = limit
        self.retry_after_s = retry_after_s


class JournalRaceError(StoreUnavailableError):
    """A batch the applier was applying was applied already (by another process, or by a
    transaction whose journal settlement did not happen yet): the apply transaction is rolled
    back, nothing is written twice, and the applier reconciles and retries."""

    code = "ingest-journal-race"


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    """One queued batch as the applier reads it (the events still sealed)."""

    seq: int
    job_id: str
    owner: str
    events: int
    seal_key: str
    sealed: bytes
    queued_ms: int


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's row: status, event count, times (ms since the epoch) and result JSON."""

    job_id: str
    owner: str
    status: str
    events: int
    queued_ms: int
    finished_ms: int | None
    expires_ms: int | None
    result: str | None


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """What the apply records for one job: its status and result JSON."""

    seq: int
    job_id: str
    status: str
    result: str


def _unavailable(exc: sqlite3.Error) -> StoreUnavailableError:
    return StoreUnavailableError(f"ingest journal unavailable: {exc}")


def _settle(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, str, str, int, int]]) -> None:
    """In a journal-file transaction: delete the finished batches' rows (if still there) and
    record their jobs' results (if still queued). Idempotent: a job settled already (by
    :meth:`SqliteIngestJournal.reconcile` of another process) is left as it is."""
    conn.executemany("DELETE FROM ingest_journal WHERE seq = ?", [(row[0],) for row in rows])
    conn.executemany(
        "UPDATE ingest_jobs SET status = ?, result = ?, finished_ms = ?, expires_ms = ? "
        "WHERE job_id = ? AND status = 'queued'",
        [(status, result, done, expires, job) for _, job, status, result, done, expires in rows],
    )


class SqliteIngestJournal:
    """The journal file (append, read, settle, expire) on a connection of its own, and a
    connection to the graph file for what is kept there (markers, the watermark, the move of a
    version-2 journal); :meth:`record_applied` runs on the graph store's write connection."""

    def __init__(self, path: Path, graph: Path, *, busy_timeout_ms: int = 10_000) -> None:
        # secure_delete: a settled batch's sealed bytes are zeroed in the page.
        # synchronous=FULL: a 202 promises the batch is on disk (survives SIGKILL and power).
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            StoreUnavailableError,
            "ingest journal",
            _SCHEMA + _BACKLOG_SCHEMA,
            JOURNAL_VERSION,
            secure_delete=True,
            synchronous="FULL",
            tighten_mode=True,
        )
        self._lock = threading.Lock()
        self._wal = path.with_name(path.name + "-wal")
        # Markers this process settled in the journal file: the next apply transaction deletes
        # them from the graph file (see record_applied / settle). Only the applier's thread.
        self._forget: list[int] = []
        self._forgetting: list[int] = []
        # True while a settle() has not completed (it failed): reconcile() before applying more.
        self.unsettled = False
        try:
            self._graph = connect_private(
                graph,
                busy_timeout_ms,
                StoreUnavailableError,
                "ingest journal (graph file)",
                secure_delete=True,
                synchronous="FULL",
                tighten_mode=True,
            )
        except BaseException:
            self._conn.close()
            raise
        try:
            # Its rare commits (open, reconcile) checkpoint as the graph store's do.
            self._graph.execute(f"PRAGMA wal_autocheckpoint={GRAPH_WAL_AUTOCHECKPOINT_PAGES}")
            self._open_graph()
            self.reconcile()
        except BaseException:
            self.close()
            raise

    # -- opening: the graph side, the move of a version 1/2 journal --------------------------

    def _open_graph(self) -> None:
        graph = self._graph
        with transaction(graph, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"):
            for statement in _GRAPH_SCHEMA.split(";"):
                if statement.strip():
                    graph.execute(statement)
            moved = graph.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ingest_journal'"
            ).fetchone()
            if moved is not None:
                self._move_from_graph()
            graph.execute(
                "INSERT INTO meta (key, value) VALUES ('ingest_journal_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(JOURNAL_VERSION),),
            )
            row = graph.execute("SELECT value FROM meta WHERE key = ?", (_WATERMARK,)).fetchone()
            applied = 0 if row is None else int(row[0])
            # A journal file newer than the graph's watermark (a new file beside a graph that
            # applied batches before): its seqs start above the watermark, never at or below.
            with transaction(
                self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"
            ):
                self._conn.execute(
                    "INSERT OR IGNORE INTO sqlite_sequence (name, seq) "
                    "SELECT 'ingest_journal', 0 WHERE NOT EXISTS "
                    "(SELECT 1 FROM sqlite_sequence WHERE name = 'ingest_journal')"
                )
                self._conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'ingest_journal'",
                    (applied,),
                )

    def _move_from_graph(self) -> None:
        """Inside the graph file's write transaction (no older process appends meanwhile): copy
        a version 1/2 journal's rows into the journal file (committed first), then delete and
        drop them from the graph file (committed by the caller)."""
        graph = self._graph
        queued = graph.execute(
            "SELECT seq, job_id, owner, events, seal_key, sealed, queued_ms FROM ingest_journal"
        ).fetchall()
        has_jobs = graph.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ingest_jobs'"
        ).fetchone()
        jobs = (
            graph.execute(
                "SELECT job_id, owner, status, events, queued_ms, finished_ms, expires_ms, "
                "result FROM ingest_jobs"
            ).fetchall()
            if has_jobs
            else []
        )
        with transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"):
            # OR IGNORE: rows a crashed earlier move committed here already are not added twice
            # (nor counted twice: the insert trigger fires only for rows inserted).
            self._conn.executemany(
                "INSERT OR IGNORE INTO ingest_journal "
                "(seq, job_id, owner, events, seal_key, sealed, queued_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                queued,
            )
            self._conn.executemany(
                "INSERT OR IGNORE INTO ingest_jobs (job_id, owner, status, events, queued_ms, "
                "finished_ms, expires_ms, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                jobs,
            )
        # The graph connection has secure_delete on: the pages the dropped tables free (the
        # sealed events among them) are zeroed (tests/storage/test_ingest_journal_file.py reads
        # the file's bytes after the move).
        for statement in (
            "DROP TRIGGER IF EXISTS ingest_journal_backlog_in",
            "DROP TRIGGER IF EXISTS ingest_journal_backlog_out",
            "DROP TABLE ingest_journal",
            "DROP TABLE IF EXISTS ingest_journal_backlog",
            "DROP TABLE IF EXISTS ingest_jobs",
        ):
            graph.execute(statement)

    # -- accepting and reading -------------------------------------------------------------------

    def append(
        self,
        job_id: str,
        owner: str,
        events: int,
        seal_key: str,
        sealed: bytes,
        now_ms: int,
        *,
        max_events: int,
        retry_after_s: int,
    ) -> int:
        """Queue one batch and its job row in one durable transaction of the journal file (the
        graph file is not touched), or raise :class:`JournalFullError` (nothing written) when it
        would pass ``max_events``. Returns the batch's seq (its place in line)."""
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            (queued,) = self._conn.execute(_QUEUED_EVENTS).fetchone()
            if queued + events > max_events:
                raise JournalFullError(queued, max_events, retry_after_s)
            seq = self._conn.execute(
                "INSERT INTO ingest_journal (job_id, owner, events, seal_key, sealed, queued_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, owner, events, seal_key, sealed, now_ms),
            ).lastrowid
            self._conn.execute(
                "INSERT INTO ingest_jobs (job_id, owner, status, events, queued_ms) "
                "VALUES (?, ?, 'queued', ?, ?)",
                (job_id, owner, events, now_ms),
            )
        assert seq is not None  # noqa: S101 - an INSERT into a rowid table has one
        return seq

    def queued(self, max_events: int, after_seq: int = 0) -> list[QueuedBatch]:
        """The oldest queued batches (those after ``after_seq``), whole, up to ``max_events``
        events (at least one batch)."""
        out: list[QueuedBatch] = []
        total = 0
        with self._lock:
            try:
                cursor = self._conn.execute(
                    "SELECT seq, job_id, owner, events, seal_key, sealed, queued_ms "
                    "FROM ingest_journal WHERE seq > ? ORDER BY seq",
                    (after_seq,),
                )
                for row in cursor:
                    if out and total + row[3] > max_events:
                        break
                    out.append(QueuedBatch(*row))
                    total += row[3]
                cursor.close()
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
        return out

    def backlog(self) -> tuple[int, int | None]:
        """How many events are queued (all batches), and when the first batch in line (the
        next the applier takes) was queued (ms since the epoch; ``None`` when nothing is).
        Two primary-key reads, whatever the backlog (the count is kept by triggers)."""
        with self._lock:
            try:
                (count,) = self._conn.execute(_QUEUED_EVENTS).fetchone()
                first = self._conn.execute(
                    "SELECT queued_ms FROM ingest_journal ORDER BY seq LIMIT 1"
                ).fetchone()
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
        return int(count), None if first is None else first[0]

    def queued_events(self) -> int:
        """How many events are queued (all batches)."""
        return self.backlog()[0]

    def job(self, job_id: str, now_ms: int) -> JobRecord | None:
        """The job's row, or ``None`` (unknown, or its result expired)."""
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT job_id, owner, status, events, queued_ms, finished_ms, expires_ms, "
                    "result FROM ingest_jobs WHERE job_id = ?",
                    (job_id,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
        if row is None:
            return None
        record = JobRecord(*row)
        if record.expires_ms is not None and record.expires_ms <= now_ms:
            return None
        return record

    def expire(self, now_ms: int, limit: int = 1000) -> int:
        """Delete up to ``limit`` job results whose time is up; how many were deleted."""
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            return self._conn.execute(
                "DELETE FROM ingest_jobs WHERE job_id IN (SELECT job_id FROM ingest_jobs "
                "WHERE expires_ms IS NOT NULL AND expires_ms <= ? LIMIT ?)",
                (now_ms, limit),
            ).rowcount

    # -- applying ----------------------------------------------------------------------------

    def record_applied(
        self, conn: sqlite3.Connection, jobs: Sequence[FinishedJob], now_ms: int, keep_ms: int
    ) -> None:
        """In the apply transaction (``conn`` is the graph store's write connection, inside its
        transaction): write one applied marker per job and raise the watermark to the highest
        seq; delete the markers this process settled since. Raises :class:`JournalRaceError`
        when a batch is at or below the watermark (applied already), so the transaction that
        applied it rolls back."""
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_WATERMARK,)).fetchone()
        applied = 0 if row is None else int(row[0])
        if any(job.seq <= applied for job in jobs):
            raise JournalRaceError("an ingest journal batch was applied already")
        self._forgetting = list(self._forget)
        if self._forgetting:
            conn.executemany(
                "DELETE FROM ingest_applied WHERE seq = ?", [(seq,) for seq in self._forgetting]
            )
        conn.executemany(
            "INSERT INTO ingest_applied (seq, job_id, status, finished_ms, expires_ms, result) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    job.seq,
                    job.job_id,
                    job.status,
                    now_ms,
                    now_ms + keep_ms,
                    zlib.compress(job.result.encode(), 1),
                )
                for job in jobs
            ],
        )
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_WATERMARK, str(max(job.seq for job in jobs))),
        )

    def settle(self, jobs: Sequence[FinishedJob], now_ms: int, keep_ms: int) -> None:
        """After the apply transaction committed: delete the batches' rows and record the jobs'
        results in one journal-file transaction; their markers are deleted by the next apply
        transaction. If this fails the markers stay, and :meth:`reconcile` settles them."""
        # The markers the committed transaction deleted are gone: no need to delete them again.
        done = set(self._forgetting)
        self._forget = [seq for seq in self._forget if seq not in done]
        self._forgetting = []
        rows = [
            (job.seq, job.job_id, job.status, job.result, now_ms, now_ms + keep_ms) for job in jobs
        ]
        self.unsettled = True
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            _settle(self._conn, rows)
        self.unsettled = False
        self._forget.extend(job.seq for job in jobs)

    def reconcile(self) -> int:
        """Settle every job the graph file holds an applied marker for (their rows leave the
        queue, their results are stored), then delete those markers; how many jobs were
        settled. Run on open and whenever an apply finds a batch applied already.

        A queued batch at or below the graph's watermark without a marker (only a journal file
        restored from an older copy has one: a marker is deleted only once its job is settled)
        was applied, and its result is gone: it is settled ``applied`` with the error
        ``ResultUnavailable`` instead of being applied again."""
        graph = self._graph
        try:
            # One snapshot: a marker missing from it was deleted before the watermark read.
            graph.execute("BEGIN")
            try:
                row = graph.execute(
                    "SELECT value FROM meta WHERE key = ?", (_WATERMARK,)
                ).fetchone()
                markers = graph.execute(
                    "SELECT seq, job_id, status, result, finished_ms, expires_ms "
                    "FROM ingest_applied ORDER BY seq"
                ).fetchall()
            finally:
                graph.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        applied = 0 if row is None else int(row[0])
        rows = [
            (seq, job, status, zlib.decompress(result).decode(), done, expires)
            for seq, job, status, result, done, expires in markers
        ]
        marked = {row[0] for row in rows}
        now_ms = int(time.time() * 1000)
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            lost = [
                (seq, job, "applied", _RESULT_UNAVAILABLE, now_ms, now_ms + _LOST_KEEP_MS)
                for seq, job in self._conn.execute(
                    "SELECT seq, job_id FROM ingest_journal WHERE seq <= ?", (applied,)
                )
                if seq not in marked
            ]
            _settle(self._conn, rows + lost)
        if rows:
            with transaction(graph, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"):
                graph.executemany(
                    "DELETE FROM ingest_applied WHERE seq = ?", [(s,) for s in marked]
                )
        self._forget = [seq for seq in self._forget if seq not in marked]
        self.unsettled = False
        return len(rows) + len(lost)

    def fail(self, jobs: Sequence[FinishedJob], now_ms: int, keep_ms: int) -> None:
        """Record ``jobs`` as finished without applying them (a batch that cannot be opened or
        applied: its journal row goes, its job says why), in one journal-file transaction.
        Raises :class:`JournalRaceError` (nothing written) when a batch is no longer queued.
        The graph is not asked: a batch fails for what it holds (its key, its bytes, its
        events), so another process reading the same batch fails it too."""
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            deleted = self._conn.executemany(
                "DELETE FROM ingest_journal WHERE seq = ?", [(job.seq,) for job in jobs]
            ).rowcount
            if deleted != len(jobs):
                raise JournalRaceError("an ingest journal batch was finished by another process")
            _settle(
                self._conn,
                [
                    (job.seq, job.job_id, job.status, job.result, now_ms, now_ms + keep_ms)
                    for job in jobs
                ],
            )

    # -- housekeeping ----------------------------------------------------------------------------

    def seal_keys(self) -> set[str]:
        """The seal keys (vault owners) of the batches still queued: those keys must live."""
        with self._lock:
            try:
                return {
                    str(row[0])
                    for row in self._conn.execute("SELECT DISTINCT seal_key FROM ingest_journal")
                }
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

    def wal_bytes(self) -> int:
        """The size of the journal file's WAL (0: empty or absent)."""
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> None:
        """Fold the journal file's WAL into the file and truncate it.

        Why: a settled batch's row is zeroed in its page (``secure_delete``), but the WAL frames
        written when it was queued still hold its sealed bytes until the WAL is overwritten, and
        its day key lives on (see :mod:`services.async_ingest`). An erasure, and the applier
        when the journal is idle, call this so those frames do not outlive the batch. Raises
        :class:`StoreUnavailableError` when a reader kept the checkpoint from completing (the
        caller retries), as the graph store's ``checkpoint`` does."""
        with self._lock:
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
        if busy:
            raise StoreUnavailableError("ingest journal WAL checkpoint blocked by a reader")

    def close(self) -> None:
        """Close both connections."""
        with self._lock:
            self._conn.close()
            self._graph.close()

"""The durable ingest journal: batches accepted with ``Prefer: respond-async``, until applied.

Two tables **in the graph's own SQLite file**, so that applying a batch and removing it from the
journal are one transaction (a crash leaves the batch either queued or applied, never both, and
never applied twice): the applier deletes the journal row and stores the job's result in the
graph store's write transaction (:meth:`SqliteIngestJournal.finish`), on the connection of that
transaction.

* ``ingest_journal``: one row per queued batch, its events **sealed** by the caller (AES-GCM
  under a vault data key; this module never sees a raw identifier, see
  :mod:`services.async_ingest`). Deleted by the transaction that applies it; the graph file
  has ``secure_delete`` on, so the sealed bytes are zeroed in the page, and what an old WAL
  frame still holds is ciphertext.
* ``ingest_jobs``: one row per job, its status and, once applied, its per-event outcomes (counts,
  identifier types, JSON pointers and reasons: no identifier value, no person id), kept until
  ``expires_at``.

Journal version 2, recorded in the graph file's ``meta`` table as ``ingest_journal_version``.
The DDL is idempotent: opening a graph file of any earlier version adds both tables, empty
(tests/storage/test_ingest_journal.py opens a schema-7 store file made by the graph store).
Version 2 adds ``ingest_journal_backlog``, the queued event count kept by triggers (see
:data:`_BACKLOG_SCHEMA`); opening a version-1 file seeds it from the rows already queued.
The graph's own ``schema_version`` is not changed (the tables are not part of the graph: a copy
or an export of the graph ignores them).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from identity.errors import IdGraphError, StoreUnavailableError
from storage.sqlite import GRAPH_WAL_AUTOCHECKPOINT_PAGES, open_migrated, transaction

JOURNAL_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_journal (
    seq       INTEGER PRIMARY KEY,          -- arrival order: applied first come, first served
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
# and delete of a journal row, whichever connection or process runs it (the applier deletes on
# the graph store's connection): a crash rolls the count back with the rows, a restart reads it
# as it is. Why not sum(events) per submit: that scans every queued row (their sealed events
# share the pages), 15 ms CPU at 2,000 queued batches of 50 events (the default limit, 100k
# events) and ~26 ms at 100,000 one-event batches, inside the submit's write transaction on the
# graph file. The seed (version 1 -> 2) runs in the opening transaction, under the write lock,
# so no row lands between the sum and the triggers; INSERT OR IGNORE leaves a kept count alone.
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


_QUEUED_EVENTS = "SELECT events FROM ingest_journal_backlog WHERE id = 1"


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
    """A journal row the applier was applying is gone (another process applied it first): the
    apply transaction is rolled back and nothing is written twice."""

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
    """What the apply transaction records for one job: its status and result JSON."""

    seq: int
    job_id: str
    status: str
    result: str


def _version(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('ingest_journal_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(JOURNAL_VERSION),),
    )


class SqliteIngestJournal:
    """The journal tables of one graph SQLite file, on a connection of their own (append,
    read, expire); :meth:`finish` runs on the graph store's write connection instead."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        # secure_delete as on every connection that writes the graph file (SqliteGraphStore).
        # synchronous=FULL: a 202 promises the batch is on disk (survives SIGKILL and power).
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            StoreUnavailableError,
            "ingest journal",
            _SCHEMA + _BACKLOG_SCHEMA,
            None,
            after=_version,
            secure_delete=True,
            synchronous="FULL",
            tighten_mode=True,
        )
        # Checkpoints as the graph store's connection does (every 64 MiB of WAL, not SQLite's
        # default 4 MiB): both write the same file, and a journal append past 4 MiB of WAL
        # copied the graph's latest transaction into the main file again after every append
        # (stop 40, bench/load.py ingest_async: 11.6x the bulk path's bytes written).
        self._conn.execute(f"PRAGMA wal_autocheckpoint={GRAPH_WAL_AUTOCHECKPOINT_PAGES}")
        self._lock = threading.Lock()

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
    ) -> None:
        """Queue one batch and its job row in one durable transaction, or raise
        :class:`JournalFullError` (nothing written) when it would pass ``max_events``."""
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            (queued,) = self._conn.execute(_QUEUED_EVENTS).fetchone()
            if queued + events > max_events:
                raise JournalFullError(queued, max_events, retry_after_s)
            self._conn.execute(
                "INSERT INTO ingest_journal (job_id, owner, events, seal_key, sealed, queued_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, owner, events, seal_key, sealed, now_ms),
            )
            self._conn.execute(
                "INSERT INTO ingest_jobs (job_id, owner, status, events, queued_ms) "
                "VALUES (?, ?, 'queued', ?, ?)",
                (job_id, owner, events, now_ms),
            )

    def queued(self, max_events: int) -> list[QueuedBatch]:
        """The oldest queued batches, whole, up to ``max_events`` events (at least one batch)."""
        out: list[QueuedBatch] = []
        total = 0
        with self._lock:
            try:
                cursor = self._conn.execute(
                    "SELECT seq, job_id, owner, events, seal_key, sealed, queued_ms "
                    "FROM ingest_journal ORDER BY seq"
                )
                for row in cursor:
                    if out and total + row[3] > max_events:
                        break
                    out.append(QueuedBatch(*row))
                    total += row[3]
                cursor.close()
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"ingest journal unavailable: {exc}") from exc
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
                raise StoreUnavailableError(f"ingest journal unavailable: {exc}") from exc
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
                raise StoreUnavailableError(f"ingest journal unavailable: {exc}") from exc
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

    @staticmethod
    def finish(
        conn: sqlite3.Connection, jobs: Sequence[FinishedJob], now_ms: int, keep_ms: int
    ) -> None:
        """In the apply transaction (``conn`` is the graph store's write connection, inside its
        transaction): delete the applied batches and record their results. Raises
        :class:`JournalRaceError` when a batch is no longer queued, so the transaction that
        applied it rolls back (another process applied it first)."""
        seqs = [(job.seq,) for job in jobs]
        deleted = conn.executemany("DELETE FROM ingest_journal WHERE seq = ?", seqs).rowcount
        if deleted != len(seqs):
            raise JournalRaceError("an ingest journal batch was applied by another process")
        conn.executemany(
            "UPDATE ingest_jobs SET status = ?, result = ?, finished_ms = ?, expires_ms = ? "
            "WHERE job_id = ?",
            [(job.status, job.result, now_ms, now_ms + keep_ms, job.job_id) for job in jobs],
        )

    def fail(self, jobs: Sequence[FinishedJob], now_ms: int, keep_ms: int) -> None:
        """Record ``jobs`` as finished without applying them (a batch that cannot be applied:
        its journal row goes, its job says why), in one transaction of this connection."""
        with (
            self._lock,
            transaction(self._conn, "BEGIN IMMEDIATE", StoreUnavailableError, "ingest journal"),
        ):
            self.finish(self._conn, jobs, now_ms, keep_ms)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

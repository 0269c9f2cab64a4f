"""Bulk ingest of JSONL and CSV files, streaming, in batches, with per-row error reporting.

Unlike ``POST /v1/ingest`` (all or nothing), a bad row of a file is reported with its line
number and the other rows are ingested: files come from exports where one bad cell should not
block a million good rows. Each batch is one transaction.

JSONL: one event per line, the shape of ``POST /v1/identify``
(``{"identifiers": [{"type": "email", "value": "..."}], "source": "crm", "timestamp": "...",
"traits": {...}, "events": [...]}``; ``source`` may be left out when ``--source`` is given).

CSV: a header row; columns ``source``, ``timestamp`` and ``message_id`` (all optional) and one
column per identifier type (``email``, ``phone``, ...). Repeat a type with a suffix: ``email.2``.
Empty cells are skipped. Unknown columns stop the import before any row is read.

Reruns converge: every row is an event with a message id, its own ``message_id`` if it has one,
else one derived from its line number and content (``bulk:<line>:<sha256 of the row>``). The
engine applies each id once within the message window, so rerunning a file that was interrupted
(or that finished) applies only the rows not applied yet: identifiers, traits *and* events end
exactly as after one clean run. The derived id is keyed-hashed like any message id before it is
stored (a row holds identifiers). Edit a file between runs and its changed or shifted rows count
as new; give rows a ``message_id`` when that matters.
"""

from __future__ import annotations

import contextvars
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Literal

from identity.model import EventOutcome, IdentityEvent
from services.bulk_reader import ReaderChunks, reader_process
from services.bulk_rows import (
    SCAN_CHUNK_ROWS,
    BulkFileError,
    FileFormat,
    RowChunk,
    RowError,
    detect_format,
    validated_chunks,
)
from services.gc_policy import collected_every
from services.ingest import IngestService

__all__ = [
    "BATCHES_PER_COLLECTION",
    "DEFAULT_BATCH_EVENTS",
    "MAX_BATCH_VALUES",
    "READER_PROCESS_MIN_BYTES",
    "BulkFileError",
    "BulkReport",
    "FileFormat",
    "ReaderMode",
    "RowError",
    "detect_format",
    "ingest_file",
]

MAX_REPORTED_ERRORS = 100
# Events per transaction. 10,000: each commit (and its fsync, and the index pages it rewrites at
# random positions) is shared by ten times more events than at 1,000, which roughly halves the
# bytes written per identifier.
DEFAULT_BATCH_EVENTS = 10_000
# ... unless the batch's identifiers and facts reach this many first. Why: a batch's working set
# grows with what its rows carry, not with their number: two batches are alive at a time (one
# committing, one prepared) plus the rows read for the next, and 10,000 events with 4
# identifiers and 5 traits each held ~180 MiB of this process (stop 54: 1M identifiers with 5
# traits peaked at 572 MiB across the two processes, 466 MiB at 250k identifiers with half
# the batch). 40,000 leaves the usual identifier-only row (3-4 identifiers) at 10,000 events a
# batch, cuts a batch of such trait rows at ~4,800, and bounds memory for rows of any width.
# The price, for trait rows only: twice the commits. At 1M identifiers with 5 traits (stop 54,
# one run each against stop 53's report) 8 % more wall time with the scan on (the reader's scan
# sets the pace), 25 % more with it off, and 36 % more bytes written.
MAX_BATCH_VALUES = 40_000


@dataclass(slots=True)
class BulkReport:
    """What an import did."""

    rows: int = 0
    events: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    new_identifiers: int = 0
    refused_identifiers: int = 0
    # (identifier type, refusal reason) -> count: why identifiers were not linked, never which.
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    facts_stored: int = 0
    facts_quarantined: int = 0
    merged_persons: int = 0
    rejected_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    # The reader process's own peak resident set in KiB (services.bulk_reader), when the file
    # was read by one and the system tells it; None when it was read inline. A process's
    # getrusage(RUSAGE_CHILDREN) cannot give it: see bulk_reader._own_peak_rss_kib.
    reader_peak_rss_kib: int | None = None

    def reject(self, error: RowError) -> None:
        """Count a rejected row and keep the first few for the report."""
        self.rejected_rows += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)


# Where a file's rows are read and validated (see ingest_file).
ReaderMode = Literal["auto", "process", "inline"]
# Files from this size on are read by a process of their own in the "auto" mode: starting it
# takes ~1 s (a fresh interpreter, the policies), which a file of 16 MiB (~230k identifier-only
# rows) repays several times; a smaller file is read on this process's main thread.
READER_PROCESS_MIN_BYTES = 16 * 2**20


def ingest_file(
    service: IngestService,
    path: Path,
    *,
    actor: str,
    file_format: FileFormat | None = None,
    default_source: str | None = None,
    batch_size: int = DEFAULT_BATCH_EVENTS,
    progress: Callable[[int], None] | None = None,
    reader: ReaderMode = "auto",
    batch_values: int = MAX_BATCH_VALUES,
) -> BulkReport:
    """Stream ``path`` into the graph through ``service``; returns the report.

    Each row is validated exactly as ``POST /v1/identify`` validates a body
    (:meth:`IngestService.event`); each batch (``batch_size`` events, or fewer once they carry
    ``batch_values`` identifiers and facts: see :data:`MAX_BATCH_VALUES`) is one transaction
    (:meth:`IngestService.prepare`, then :meth:`IngestService.commit_prepared`, pipelined: see
    :class:`_CommitPipeline`). ``progress`` is called with the bytes read, a chunk of rows at a
    time.

    ``reader``: where the rows are read and validated. ``process``: in a process of its own
    (:mod:`services.bulk_reader`; the service must have a ``validation_builder``), on the
    machine's other core while this process prepares and commits. ``inline``: on this process's
    main thread. ``auto`` (the default): a process for files of :data:`READER_PROCESS_MIN_BYTES`
    or more when the service can build one, else inline. The report and the graph are the same
    either way.
    Raises :class:`BulkFileError`.
    """
    fmt = file_format or detect_format(path)
    if not path.is_file():
        raise BulkFileError(f"{path} is not a readable file")
    report = BulkReport()
    batch: list[IdentityEvent] = []
    values = 0  # the batch's identifiers and facts
    # A chunk is never longer than a batch, so a batch still commits as soon as its last row is
    # read.
    chunk_rows = max(1, min(SCAN_CHUNK_ROWS, batch_size))
    with (
        collected_every(BATCHES_PER_COLLECTION) as between_batches,
        _short_gil_turns(),
        _CommitPipeline(service, report, actor, between_batches) as committer,
        _row_chunks(service, path, fmt, default_source, chunk_rows, reader) as chunks,
    ):
        for chunk in chunks:
            report.rows += len(chunk.items)
            if progress is not None:
                progress(chunk.bytes_read)
            for item in chunk.items:
                if isinstance(item, RowError):
                    report.reject(item)
                    continue
                batch.append(item)
                values += len(item.identifiers) + len(item.facts)
                if len(batch) >= batch_size or values >= batch_values:
                    committer.submit(batch)
                    values = 0
        committer.submit(batch)
        committer.drain()
    if isinstance(chunks, ReaderChunks):
        report.reader_peak_rss_kib = chunks.peak_rss_kib
    return report


def _row_chunks(
    service: IngestService,
    path: Path,
    file_format: FileFormat,
    default_source: str | None,
    chunk_rows: int,
    reader: ReaderMode,
) -> AbstractContextManager[Iterable[RowChunk]]:
    """The file's rows, validated, from where ``reader`` says (see :func:`ingest_file`)."""
    builder = service.validation_builder
    if reader == "process" and builder is None:
        raise ValueError("reader='process' needs an IngestService with a validation_builder")
    if builder is not None and (
        reader == "process"
        or (reader == "auto" and path.stat().st_size >= READER_PROCESS_MIN_BYTES)
    ):
        return reader_process(builder, path, file_format, default_source, chunk_rows)
    return nullcontext(
        validated_chunks(service.validation, path, file_format, default_source, chunk_rows)
    )


class _CommitPipeline:
    """Commits a file's batches in order on one writer thread while the caller reads and
    validates the next batch: at most one batch is committing and one is being filled.

    Why: about a third of a batch is spent where the GIL is released (SQLite statements, the
    key file's and the graph's fsync'd commits, the checkpoint); without a pipeline the reader
    sat idle through all of it. What stays the same:

    * **order and visibility**: one writer, batches committed strictly in file order, each
      seeing every batch before it (one write per batch, as before);
    * **one transaction per batch, durability as before**: a batch is counted in the report
      only once its write returned (its transaction is durable);
    * **a failed commit stops the file**: its error is raised to the caller at the next
      ``submit`` or at ``drain``, and no later batch is committed (the batch validated and
      prepared meanwhile is dropped, as the rows after a failed batch always were; ids it
      reserved are dropped like those of any failed write);
    * **memory**: two batches at most (the one committing, the one being filled), each ending
      at ``batch_size`` events or once it carries :data:`MAX_BATCH_VALUES` identifiers and
      facts;
    * **garbage**: the young generation is collected after every
      :data:`BATCHES_PER_COLLECTION`-th committed batch, before the next one is handed to the
      writer; automatic collection is off in between.

    The reader prepares each batch (:meth:`IngestService.prepare`: hashing and message digests,
    no graph access) while the batch before may still commit; the writer runs
    :meth:`IngestService.commit_prepared` in a copy of the caller's context (context variables
    such as the logger's bound fields travel with it).
    """

    def __init__(
        self,
        service: IngestService,
        report: BulkReport,
        actor: str,
        between_batches: Callable[[], None],
    ) -> None:
        self._service = service
        self._report = report
        self._actor = actor
        self._between_batches = between_batches
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-commit")
        self._pending: Future[list[EventOutcome]] | None = None

    def __enter__(self) -> _CommitPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        # On an error in the reader, the batch in flight still finishes (it cannot be
        # abandoned half-way: it is one transaction either way); its outcome is not counted
        # because the report is not returned.
        self._writer.shutdown(wait=True)

    def submit(self, batch: list[IdentityEvent]) -> None:
        """Hand ``batch`` (its events; the list is emptied) to the writer once the batch
        before it committed; raises that batch's error if it failed."""
        if not batch:
            self.drain()
            return
        # Prepared here (hashing, message digests, ids with stored keys; no graph access) while
        # the batch before may still commit; handed to the writer once that one committed.
        prepared = self._service.prepare(list(batch))
        batch.clear()
        self.drain()
        context = contextvars.copy_context()
        self._pending = self._writer.submit(
            context.run, self._service.commit_prepared, prepared, self._actor
        )

    def drain(self) -> None:
        """Wait for the batch in flight (if any), count its outcomes, collect its garbage;
        raises its error if its commit failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        _count(self._report, pending.result())
        self._between_batches()  # the batch's objects are freed by now


# Committed batches per young-generation collection while a file is ingested: the cyclic
# garbage collector runs between batches only (services.gc_policy.collected_every). Why: a batch
# keeps ~25 tracked objects per identifier alive until it commits (events, hashed identifiers,
# nodes, links, facts, outcomes), and every collection during the batch walks them again and
# again; they form no cycles (a 100k-identifier run collected none), so those walks are pure
# cost: 5 % of bulk CPU at 100k identifiers even with young collections every 100,000
# allocations, 15 % of a lean implementation of the same work at the default setting. Why not
# after every batch (as until stop 36): what is alive then is mostly the next batch, already
# prepared by the reader (_CommitPipeline), and walking it cost ~48 ms per 10,000-event batch,
# 1.9 % of bulk CPU at 200k identifiers; walked once per few batches, the same objects are
# walked no more often (survivors leave the young generation) and the batches in between cost
# nothing. Bulk files are ingested by the ``idgraph ingest`` process (the only caller), so the
# process-wide switch touches no server; it is restored when the file is done, also on failure.
BATCHES_PER_COLLECTION = 4


# The interpreter's switch interval while a file is ingested (the default is 5 ms).
BULK_SWITCH_INTERVAL_S = 0.001


@contextmanager
def _short_gil_turns() -> Iterator[None]:
    """Shorten the interpreter's switch interval to :data:`BULK_SWITCH_INTERVAL_S` while a file
    is ingested.

    Why: the writer thread gives the GIL up for every SQLite step, fsync and commit, and gets it
    back only when the reader thread (validating the next batch in Python) is asked to let go:
    after a full switch interval. At the default 5 ms each such wait cost the writer far more
    than the statement it ran, so the two threads took turns instead of overlapping (the
    writer's SQL could run beside the reader's Python on a second core). The store's bulk
    statements are few and wide (``storage.sqlite.WIDE_PARAMS``), so the writer waits a
    few dozen times per batch; 1 ms bounds each wait while adding few forced switches between
    the two threads' Python. Process-wide, like the collector setting (see
    :data:`BATCHES_PER_COLLECTION`: bulk files are ingested by the ``idgraph ingest``
    process), and restored when the file is done, also on failure.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, BULK_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# One C-level pass per figure over a batch's outcomes (a bulk file has hundreds of thousands:
# a Python loop reading five fields and an enum's value per outcome was ~2 us each).
_OUTCOME = attrgetter("outcome")
_NEW_IDENTIFIERS = attrgetter("new_identifiers")
_MERGED = attrgetter("merged_person_ids")
_FACTS_STORED = attrgetter("facts_stored")
_FACTS_QUARANTINED = attrgetter("facts_quarantined")


def _count(report: BulkReport, outcomes: list[EventOutcome]) -> None:
    report.events += len(outcomes)
    # Counted per kind, then by the kind's value (the report's keys), in the order of first
    # appearance, as one increment per outcome did.
    for kind, count in Counter(map(_OUTCOME, outcomes)).items():
        report.outcomes[kind.value] += count
    report.new_identifiers += sum(map(_NEW_IDENTIFIERS, outcomes))
    report.merged_persons += sum(map(len, map(_MERGED, outcomes)))
    report.facts_stored += sum(map(_FACTS_STORED, outcomes))
    report.facts_quarantined += sum(map(_FACTS_QUARANTINED, outcomes))
    for outcome in outcomes:
        if outcome.refusals:
            # Distinct identifiers, not positions: a repeat of a refused identifier counts once.
            refused = outcome.refused_identifiers
            report.refused_identifiers += len(refused)
            report.refusals.update((r.hashed.type, r.reason.value) for r in refused)

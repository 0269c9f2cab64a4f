"""What the use cases report to monitoring: a port the entrypoints' metrics implement.

The use cases time their store calls and count ingest outcomes; *where* that goes (an app's own
Prometheus registry, nothing for a one-off CLI command, a tally file for the ingest applier
process) is the entrypoint's choice.

:class:`TalliedMetrics` is the applier process's (``idgraph ingest-applier``): it serves no
``/metrics`` of its own, so it keeps its counts in a small file (:class:`TallyFile`) that the
server which started it reads and adds to its own series (``api.metrics``). One scrape of the
server then shows every ingest, whichever process applied it.

The same file tells the server when its applier has started (:class:`ApplierStart`,
``/readyz``): the applier writes it once it has first looked at the journal, marked with the id
``idgraph serve`` gave this start of the server and its child.
"""

from __future__ import annotations

import bisect
import collections
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from identity.errors import IdGraphError
from identity.model import EventOutcome, Outcome, RefusalReason
from privacy.keys.secretfile import replace_secret_file

log = structlog.get_logger("idgraph.metrics")

# ``idgraph_ingest_facts``' ``status`` label values, in the order of :class:`OutcomeCounts`.
FACT_STATUSES = ("stored", "quarantined", "dropped")
# ``idgraph_store_seconds``' buckets. Store calls are fast (ms) and ingest batches slow (s):
# finer buckets at the low end. Shared by the server's histogram and the applier's tally, whose
# bucket counts are added to the server's bucket by bucket.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreOperation(StrEnum):
    """The engine/store calls timed by ``idgraph_store_seconds`` (its ``operation`` label)."""

    INGEST = "ingest"
    RESOLVE = "resolve"
    EXPLAIN = "explain"
    UNLINK = "unlink"


class JournalBatchSource(StrEnum):
    """Where the ingest journal's applier took a queued batch's events from
    (``idgraph_ingest_journal_batches_opened``'s ``source`` label)."""

    MEMORY = "memory"  # kept by the accepting process as it validated them
    JOURNAL = "journal"  # unsealed, decompressed and decoded from the batch's journal row


class UseCaseMetrics(Protocol):
    """Store latency, ingest outcomes and the ingest journal's applier (label values from fixed
    sets only)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """Observe how long the enclosed engine call takes (failures included)."""
        ...

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes, refusals and facts of ingested events."""
        ...

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """Count ``count`` queued batches the journal's applier opened from ``source``."""
        ...


class NoMetrics:
    """Metrics that go nowhere (CLI commands, benches)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """No timing."""
        return nullcontext()

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """No counting."""

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """No counting."""


@contextmanager
def timed(observe: Callable[[float], None]) -> Iterator[None]:
    """Pass the seconds the enclosed block took to ``observe`` (failures included): every
    ``time_store`` of the metrics port's implementations."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """Ingest outcomes added up by label value: what one ``record_ingest`` adds to the
    counters (one increment per label value, not five per event)."""

    events: Mapping[str, int]  # Outcome value -> events
    refused: Mapping[str, int]  # RefusalReason value -> distinct refused identifiers
    facts: tuple[int, int, int]  # stored, quarantined, dropped (FACT_STATUSES)

    @classmethod
    def of(cls, outcomes: Iterable[EventOutcome]) -> OutcomeCounts:
        """The counts of ``outcomes``."""
        events: collections.Counter[str] = collections.Counter()
        refused: collections.Counter[str] = collections.Counter()
        stored = quarantined = dropped = 0
        for outcome in outcomes:
            events[outcome.outcome.value] += 1
            for refusal in outcome.refused_identifiers:  # distinct identifiers, not positions
                refused[refusal.reason.value] += 1
            stored += outcome.facts_stored
            quarantined += outcome.facts_quarantined
            dropped += outcome.facts_dropped
        return cls(events, refused, (stored, quarantined, dropped))


@dataclass(frozen=True, slots=True)
class StoreTally:
    """One operation's ``idgraph_store_seconds`` observations: per-bucket counts (not
    cumulative; one per :data:`STORE_BUCKETS` bound, then the ``+Inf`` bucket) and their sum."""

    buckets: tuple[int, ...]
    seconds: float

    @property
    def count(self) -> int:
        """Observations in all."""
        return sum(self.buckets)


@dataclass(frozen=True, slots=True)
class Tallies:
    """What an applier process counted, by family and label value (fixed sets only)."""

    events: Mapping[str, int] = field(default_factory=dict)  # idgraph_ingest_events{outcome}
    refused: Mapping[str, int] = field(default_factory=dict)  # ..._refused_identifiers{reason}
    facts: Mapping[str, int] = field(default_factory=dict)  # idgraph_ingest_facts{status}
    opened: Mapping[str, int] = field(default_factory=dict)  # ..._batches_opened{source}
    store: Mapping[str, StoreTally] = field(default_factory=dict)  # store_seconds{operation}
    # The run id (IDGRAPH_INGEST_APPLIER_RUN_ID) of the applier that wrote the file, once it has
    # looked at the journal (TalliedMetrics.mark_started): never a label, only compared.
    run_id: str | None = None


# The label values each counted family may hold: a tally file is read back through these, so a
# value that is not one of them (a damaged or foreign file) never becomes a label.
_LABELS: dict[str, frozenset[str]] = {
    "events": frozenset(o.value for o in Outcome),
    "refused": frozenset(r.value for r in RefusalReason),
    "facts": frozenset(FACT_STATUSES),
    "opened": frozenset(s.value for s in JournalBatchSource),
}
_OPERATIONS = frozenset(o.value for o in StoreOperation)
_TALLY_FORMAT = 1  # run_id was added as an optional member: a reader that ignores it still reads
_MAX_RUN_ID = 64


class TallyFile:
    """A :class:`Tallies` kept as JSON at ``path``: written whole (a temporary file renamed over
    it, so a reader sees the last complete write; owner-only, mode 0600: the one atomic replace,
    ``privacy.keys.secretfile.replace_secret_file``), read leniently (a missing, partly foreign
    or damaged file reads as what of it is valid: metrics never fail a process).

    Not fsynced (``durable=False``): the counts are monitoring, not data, rewritten after every
    group the applier applies, and a crash loses at most the last write. Its directory is never
    created here: it is ``idgraph serve``'s (removed when the server stops) or the operator's,
    and a write into a missing one fails (:meth:`TalliedMetrics.flush` logs it and tries again).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Tallies:
        """The tallies last written (empty if none could be read)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Tallies()
        if not isinstance(raw, dict) or raw.get("format") != _TALLY_FORMAT:
            return Tallies()
        counted = {
            family: {
                label: int(value)
                for label, value in _mapping(raw.get(family)).items()
                if label in allowed and isinstance(value, int) and value >= 0
            }
            for family, allowed in _LABELS.items()
        }
        store: dict[str, StoreTally] = {}
        for operation, raw_tally in _mapping(raw.get("store")).items():
            tally = _mapping(raw_tally)
            buckets, seconds = tally.get("buckets"), tally.get("seconds")
            if (
                operation in _OPERATIONS
                and isinstance(buckets, list)
                and len(buckets) == len(STORE_BUCKETS) + 1
                and all(isinstance(b, int) and b >= 0 for b in buckets)
                and isinstance(seconds, int | float)
                and seconds >= 0
            ):
                store[operation] = StoreTally(tuple(buckets), float(seconds))
        run_id = raw.get("run_id")
        if not isinstance(run_id, str) or not 0 < len(run_id) <= _MAX_RUN_ID:
            run_id = None
        return Tallies(**counted, store=store, run_id=run_id)

    def write(self, tallies: Tallies) -> None:
        """Replace the file with ``tallies``."""
        body: dict[str, object] = {
            "format": _TALLY_FORMAT,
            "events": dict(tallies.events),
            "refused": dict(tallies.refused),
            "facts": dict(tallies.facts),
            "opened": dict(tallies.opened),
            "store": {
                op: {"buckets": list(t.buckets), "seconds": t.seconds}
                for op, t in tallies.store.items()
            },
        }
        if tallies.run_id is not None:
            body["run_id"] = tallies.run_id
        replace_secret_file(
            self.path,
            json.dumps(body, separators=(",", ":")),
            durable=False,
            create_directory=False,
        )


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


class TalliedMetrics:
    """The use cases' metrics as tallies in memory, written to a :class:`TallyFile` by
    :meth:`flush` (the applier process flushes after each group it applies).

    It starts from what the file holds, so an applier that is started again after a crash goes
    on counting where the one before it stopped: the server's counters only ever grow while it
    runs. Thread-safe (the applier's thread counts, its main thread may flush).

    ``run_id``: the id ``idgraph serve`` gave this start of the server and its applier child
    (``IDGRAPH_INGEST_APPLIER_RUN_ID``), written into the file by :meth:`mark_started` once the
    applier has looked at the journal (see :class:`ApplierStart`). The file's own run id is not
    taken over: it may be an earlier server's."""

    def __init__(self, file: TallyFile, run_id: str | None = None) -> None:
        self._file = file
        self._run_id = run_id
        self._started = False
        start = file.read()
        self._lock = threading.Lock()
        # One write at a time, each of the tallies as they are when it starts: two flushes (the
        # applier's thread, the main thread's retry) cannot put an older count over a newer one.
        self._write_lock = threading.Lock()
        self._counts: dict[str, collections.Counter[str]] = {
            "events": collections.Counter(start.events),
            "refused": collections.Counter(start.refused),
            "facts": collections.Counter(start.facts),
            "opened": collections.Counter(start.opened),
        }
        self._store: dict[str, tuple[list[int], float]] = {
            op: (list(t.buckets), t.seconds) for op, t in start.store.items()
        }
        self._changed = False

    def tallies(self) -> Tallies:
        """What was counted so far (and the run id, once :meth:`mark_started`)."""
        with self._lock:
            return Tallies(
                **{family: dict(counts) for family, counts in self._counts.items()},
                store={op: StoreTally(tuple(b), s) for op, (b, s) in self._store.items()},
                run_id=self._run_id if self._started else None,
            )

    def mark_started(self) -> None:
        """The applier has looked at the journal (before it applies anything): write the file
        now, with the run id, whether or not anything was counted. The server's ``/readyz``
        waits for it (:class:`ApplierStart`). A write that fails is owed like any other
        (:meth:`flush`)."""
        with self._lock:
            self._started = True
            self._changed = True
        self.flush()

    def flush(self) -> None:
        """Write the tallies to the file if anything was counted since the last flush. A write
        that fails (the file's directory gone, a full disk) is logged and tried again at the
        next flush: counting never stops the applier."""
        with self._write_lock:
            with self._lock:
                if not self._changed:
                    return
                self._changed = False
            try:
                self._file.write(self.tallies())
            except OSError as exc:
                with self._lock:
                    self._changed = True
                # The path is configuration (IDGRAPH_INGEST_APPLIER_TALLY_FILE), never personal
                # data.
                log.warning(
                    "ingest_applier_tally_not_written", path=str(self._file.path), error=str(exc)
                )

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """Observe how long the enclosed engine call takes (failures included)."""
        return timed(lambda seconds: self.observe_store(operation, seconds))

    def observe_store(self, operation: StoreOperation, seconds: float) -> None:
        """Count one store call of ``seconds``."""
        with self._lock:
            buckets, total = self._store.get(operation.value) or (
                [0] * (len(STORE_BUCKETS) + 1),
                0.0,
            )
            # Prometheus buckets are "less than or equal": bisect_left finds the first bound at
            # or above the value (past the last one: the +Inf bucket).
            buckets[bisect.bisect_left(STORE_BUCKETS, seconds)] += 1
            self._store[operation.value] = (buckets, total + seconds)
            self._changed = True

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes, refusals and facts of ingested events."""
        counts = OutcomeCounts.of(outcomes)
        with self._lock:
            self._counts["events"].update(counts.events)
            self._counts["refused"].update(counts.refused)
            self._counts["facts"].update(
                {s: n for s, n in zip(FACT_STATUSES, counts.facts, strict=True) if n}
            )
            self._changed = True

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """Count ``count`` queued batches the journal's applier opened from ``source``."""
        if count > 0:
            with self._lock:
                self._counts["opened"][source.value] += count
                self._changed = True


class IngestApplierNotStartedError(IdGraphError):
    """The ingest applier process this server started has not looked at the journal yet: an
    asynchronous batch accepted now would wait until it has (``/readyz`` answers 503)."""

    code = "ingest-applier-not-started"

    def __init__(self) -> None:
        super().__init__("not ready: the ingest applier has not started yet")


class IngestApplierRestartingError(IngestApplierNotStartedError):
    """The ingest applier process this server started exited before it ever looked at the
    journal, and is being started again (``/readyz`` answers 503 and says so: a child that
    crashes at every start would otherwise look like one still starting, for ever)."""

    code = "ingest-applier-restarting"

    def __init__(self, exits: int, status: int | None) -> None:
        IdGraphError.__init__(
            self,
            f"not ready: the ingest applier process exited {exits} time(s) before it started "
            f"(last exit status {status}) and is being started again; asynchronous batches "
            "stay queued in the journal until it runs; see the server log's "
            "ingest_applier_process_exited lines",
        )


class ApplierExits:
    """How often the applier child of this process's ``idgraph serve`` exited, and its last
    exit status: recorded by the supervisor (``cli.applier.ApplierChild``), read by ``/readyz``
    (:class:`ApplierStart`), both in the server's process. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._last: int | None = None

    def record(self, status: int) -> None:
        """One more exit, with its status."""
        with self._lock:
            self._count += 1
            self._last = status

    def seen(self) -> tuple[int, int | None]:
        """(exits so far, the last one's status)."""
        with self._lock:
            return self._count, self._last


class ApplierStart:
    """Whether the ingest applier process ``idgraph serve`` started beside this server has begun
    (for ``/readyz``): it has, once :class:`TallyFile` ``file`` holds ``run_id``.

    Why this signal: the child builds its own container (seconds) after the server is already
    answering, and until its first look at the journal an asynchronous batch accepted by the
    server is not applied. The child writes the file right after that first look, before it
    applies anything (:meth:`TalliedMetrics.mark_started`). The run id is new at each start of
    ``idgraph serve`` (``IDGRAPH_INGEST_APPLIER_RUN_ID``, given to the child through its
    environment), so a file an earlier server's child left at the same path (a configured one,
    or one that outlived a SIGKILL) never counts. The file's age or the parent's process id
    could not tell them apart as surely (clocks move; a restarted container's server often has
    the same process id). A child started again after a crash writes the same id: the server
    stays ready meanwhile (the journal keeps what it accepts).

    Once started, always started: the file is not read again. ``exits``: the supervisor's
    record of the child's exits; a child that exited before it started is reported as such
    (:class:`IngestApplierRestartingError`), not as one still starting."""

    def __init__(self, file: TallyFile, run_id: str, exits: ApplierExits | None = None) -> None:
        self._file = file
        self._run_id = run_id
        self._exits = exits
        self._started = False

    def started(self) -> bool:
        """Whether the applier of this run has looked at the journal."""
        if not self._started:
            self._started = self._file.read().run_id == self._run_id
        return self._started

    def check(self) -> None:
        """Raise :class:`IngestApplierNotStartedError` unless :meth:`started`
        (:class:`IngestApplierRestartingError` once the child exited before it started)."""
        if not self.started():
            exits, status = self._exits.seen() if self._exits is not None else (0, None)
            if exits:
                raise IngestApplierRestartingError(exits, status)
            raise IngestApplierNotStartedError

"""Asynchronous batch ingest: validate now, acknowledge once durable, apply in big transactions.

``POST /v1/ingest`` with ``Prefer: respond-async`` (RFC 7240) comes here. Why it exists: a server
that answers only once a batch is applied can commit at most what is in flight (a few hundred
events per transaction), and a small transaction rewrites ~20 randomly keyed B-tree pages per
event (stop 39: 1.25 GB written per 20k events vs 0.16 GB at 10k-event transactions). Here the
batch is acknowledged once it is **durable** in the journal, and one applier drains the journal
in transactions of up to ``apply_max_events`` (the bulk path's 10,000).

1. :meth:`AsyncIngest.submit` validates the batch exactly as the synchronous path does
   (:meth:`IngestService.validate_batch`: same 422s, same pointers, nothing queued if any event
   is invalid), encodes the *validated* events (normalized identifiers, scanned and redacted
   facts, GPC consents) and seals them, then appends them to the journal in one fsync'd
   transaction (:class:`storage.journal.SqliteIngestJournal`). Only then is the caller answered
   202. A full journal is refused (:class:`storage.journal.JournalFullError`, 503 + Retry-After).
2. :class:`JournalApplier` (one thread per server process) takes the oldest batches, whole
   (those this process accepted as it validated them, kept in memory since: no unsealing and
   decoding; any other batch unsealed and decoded from its row), and
   writes them with :meth:`IngestService.apply_validated`, while a second thread prepares the
   batches queued after them for the next transaction (see :meth:`AsyncIngest.apply_once`):
   the same resolution, message-id dedup,
   suppression of erased identifiers, metrics and audit entries as the synchronous path. The
   journal is a file of its own (accepting never waits for the graph's write lock, so the
   applier's transactions reach ``apply_max_events``): the apply transaction writes an
   *applied marker* per job (its result) and the applied watermark into the graph file
   (``then`` of the engine), and after that commit the journal file deletes the batches and
   stores the results (:meth:`storage.journal.SqliteIngestJournal.settle`). A crash in
   between leaves the markers: the next open settles those jobs from them. A batch is applied
   at most once (the watermark), and a 202'd batch is either queued or marked applied.
   The ``consent.recorded`` audit entries are appended after that commit, as on the
   synchronous path. If that append fails, the job is ``applied`` (its records are stored) and
   shows ``error: ConsentAuditError`` (the synchronous path's 503 ``consent-audit-failed``)
   while the applier retries the entries (:meth:`AsyncIngest.retry_consent_audits`, each
   loop); once they are written the error is gone. The retry is held in this process: after a
   crash in between, the error log line ``consent_audit_missing`` holds what the entries would
   have held (as for the synchronous path), for an operator to append.
3. :meth:`AsyncIngest.job` answers ``GET /v1/ingest/jobs/{id}`` for the key that submitted it
   (another key: not found), until the result expires (``keep_results``, default 24 h after the
   job finished).

Sealing (why it is sound): the journal holds normalized identifiers and fact payloads, which must
never be at rest in clear (DEVELOPERS.md invariant 1). Each batch is sealed by the vault
(:meth:`privacy.keys.vault.Vault.encrypt`): AES-256-GCM with a random 96-bit nonce under the data
key of a journal owner, itself wrapped by the KEK (which has a key id, so it rotates with
``idgraph keys rewrap`` like every data key). One journal owner per UTC day (``ingestjournal-
YYYYMMDD``): a key seals at most one day of batches, far below the 2**32 messages at which random
GCM nonces start to risk a collision. The AAD names the job id, so a sealed batch cannot be moved
to another job's row. The journal file has ``secure_delete`` on: a settled row's bytes are zeroed,
and a stale WAL frame holds only the ciphertext. That ciphertext does not outlive its purpose:
the applier truncates the journal's WAL whenever nothing is queued (:meth:`AsyncIngest.housekeep`),
an erasure truncates it with the graph's, and a day key is shredded once no queued batch is sealed
under it and its day ended more than a day ago (:meth:`AsyncIngest.shred_spent_keys`): then no
copy of that day's batches (old frames, backups) can be opened.

Erasure: a batch queued before an erasure and applied after it cannot bring the person back: the
apply resolves against the suppression list the erasure wrote (keyed hashes of the erased
identifiers), in the apply's own transaction, as a re-ingest would (tests prove it).

Neo4j: the applied markers and the watermark must commit with the events, in the graph's own
transaction, and only the SQLite store writes them today (its ``then`` connection); on Neo4j no
journal is configured and ``Prefer: respond-async`` is not applied (RFC 7240 lets a server ignore
a preference): the batch is applied synchronously and answered 200 without
``Preference-Applied``.
"""

from __future__ import annotations

import binascii
import contextlib
import contextvars
import copy
import json
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog

from identity.errors import IdGraphError, StoreUnavailableError
from identity.identifiers import NormalizedIdentifier
from identity.model import (
    ConsentInput,
    ConsentSignal,
    EventOutcome,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    Outcome,
)
from identity.resolution import PreparedEvents
from identity.store.port import GraphTransaction
from privacy.auditing.log import api_key_actor
from privacy.consent.recording import ConsentAuditError
from services.ingest import IngestService
from services.inputs import IdentifyInput, IdentifyRequest
from services.metrics import JournalBatchSource
from storage.journal import FinishedJob, JournalRaceError, QueuedBatch, SqliteIngestJournal

log = structlog.get_logger("idgraph.ingest.async")

_CODEC_VERSION = 1
_JOURNAL_OWNER_PREFIX = "ingestjournal-"
_MS = 1000
# An applier in its own process runs the idle upkeep (expired results, the journal's
# checkpoint: each takes the journal's write lock) at most this often (s), not on every poll.
IDLE_UPKEEP_S = 1.0
# How often an applier in its own process (``idgraph ingest-applier``) looks at the journal,
# and how often the prepare-ahead thread (any applier) looks for batches another process queued
# while a group is written: submits in the server process cannot wake them, so this bounds the
# time a batch waits before they see it (the backlog check is two primary-key reads).
APPLIER_PROCESS_POLL_S = 0.05


class IngestJobNotFoundError(IdGraphError):
    """No ingest job with this id for this API key (unknown, another key's, or expired)."""

    code = "ingest-job-not-found"

    def __init__(self, job_id: str) -> None:
        super().__init__("no such ingest job")
        self.job_id = job_id


class JournalSealer(Protocol):
    """What the journal needs of the vault (:class:`privacy.keys.vault.Vault`)."""

    def encrypt(self, owner: str, field: str, plaintext: bytes) -> bytes:
        """Seal ``plaintext`` under ``owner``'s data key, bound to ``field``."""
        ...

    def decrypt(self, owner: str, field: str, blob: bytes) -> bytes:
        """Open what :meth:`encrypt` sealed."""
        ...

    def owners_starting(self, prefix: str, limit: int = 1000) -> list[str]:
        """The owners holding a key whose id starts with ``prefix`` (the journal's day keys)."""
        ...

    def shred(self, owners: Collection[str]) -> int:
        """Destroy the keys of ``owners``."""
        ...


@dataclass(frozen=True, slots=True)
class AsyncIngestLimits:
    """Journal bound, retry hint, apply size and how long results are kept (from settings)."""

    max_queued_events: int = 100_000
    retry_after_s: int = 5
    apply_max_events: int = 10_000
    keep_results_s: int = 24 * 3600
    # How long the applier lets the oldest queued batch wait for more to join its transaction
    # (unless apply_max_events are queued already): a transaction's cost is mostly per page it
    # rewrites, so a few more batches per transaction cost little more than one.
    apply_linger_s: float = 1.0
    # ...but no longer than until no batch arrived for this long: once callers stop sending,
    # waiting out the linger only delays the jobs (nothing more will share the transaction).
    # Callers sending steadily (a batch every few ms) keep the linger; a lone batch, or the
    # last ones of a burst, is applied after apply_idle_s instead of up to apply_linger_s.
    apply_idle_s: float = 0.1
    # Whether this process keeps the batches it accepts in memory for its own applier (the
    # applier then takes them as validated instead of decoding their rows). Off when another
    # process applies the journal (``IDGRAPH_INGEST_APPLIER=process``): nothing here would
    # take them.
    keep_accepted: bool = True


@dataclass(frozen=True, slots=True)
class AcceptedJob:
    """A batch queued durably: its job id and event count."""

    job_id: str
    events: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    """An ingest job as its owner sees it; ``results`` once applied, ``error`` once failed."""

    job_id: str
    status: str
    events: int
    queued_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    results: list[dict[str, Any]] | None
    refused_identifiers: int | None
    error: str | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seal_key(day: date) -> str:
    """The journal owner (vault data key) that seals the batches queued on ``day`` (UTC)."""
    return _JOURNAL_OWNER_PREFIX + day.strftime("%Y%m%d")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * _MS)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / _MS, UTC)


# -- codec: validated events <-> bytes (sealed before they are stored) -------------------------


class _Texts(dict[int, str]):
    """ISO 8601 texts of the datetimes of one encoded batch, made once per datetime object (keyed
    by ``id``: every one is alive in the batch being encoded, and an equal datetime with another
    UTC offset keeps its own text). An event's facts mostly share the event's own datetime."""

    def __init__(self, moments: list[datetime]) -> None:
        super().__init__()
        self._alive = moments  # the keyed objects, so no id is reused while this lives

    def of(self, moment: datetime) -> str:
        text = self.get(id(moment))
        if text is None:
            text = self[id(moment)] = moment.isoformat()
            self._alive.append(moment)
        return text


# Enum values by member: a dict lookup, not the ``value`` property (a descriptor call each).
_KIND_TEXT = {kind: kind.value for kind in FactKind}
_STATUS_TEXT = {status: status.value for status in FactStatus}
_SIGNAL_TEXT = {signal: signal.value for signal in ConsentSignal}


def _encode_event(event: IdentityEvent, texts: _Texts) -> list[Any]:
    return [
        [[i.type, i.value] for i in event.identifiers],
        event.source,
        texts.of(event.occurred_at),
        event.message_id,
        [
            [
                _KIND_TEXT[f.kind],
                f.name,
                f.category,
                texts.of(f.at),
                # binascii directly: the same text as base64.b64encode, without its wrapper.
                binascii.b2a_base64(f.payload, newline=False).decode("ascii"),
                _STATUS_TEXT[f.status],
                list(f.pii),
            ]
            for f in event.facts
        ],
        [
            [c.purpose, c.granted, texts.of(c.at), _SIGNAL_TEXT[c.signal], c.lawful_basis, c.proof]
            for c in event.consents
        ],
    ]


_KINDS = {kind.value: kind for kind in FactKind}
_STATUSES = {status.value: status for status in FactStatus}
_SIGNALS = {signal.value: signal for signal in ConsentSignal}


class _Moments(dict[str, datetime]):
    """ISO 8601 texts parsed once per decoded journal batch: an event's facts mostly carry the
    event's own time, so most texts repeat."""

    def __missing__(self, text: str) -> datetime:
        moment = self[text] = datetime.fromisoformat(text)
        return moment


def _decode_event(item: list[Any], moments: _Moments) -> IdentityEvent:
    identifiers, source, occurred, message_id, facts, consents = item
    return IdentityEvent(
        tuple([NormalizedIdentifier(t, v) for t, v in identifiers]),
        source,
        moments[occurred],
        tuple(
            [
                FactInput(
                    _KINDS[kind],
                    name,
                    category,
                    moments[at],
                    binascii.a2b_base64(payload),
                    _STATUSES[status],
                    tuple(pii),
                )
                for kind, name, category, at, payload, status, pii in facts
            ]
        )
        if facts
        else (),
        tuple(
            [
                ConsentInput(purpose, granted, moments[at], _SIGNALS[signal], basis, proof)
                for purpose, granted, at, signal, basis, proof in consents
            ]
        )
        if consents
        else (),
        message_id,
    )


def encode_events(events: Sequence[IdentityEvent]) -> bytes:
    """The validated events as bytes (JSON, versioned): what is sealed into the journal."""
    texts = _Texts([])
    return json.dumps(
        [_CODEC_VERSION, [_encode_event(e, texts) for e in events]], separators=(",", ":")
    ).encode()


def decode_events(data: bytes) -> list[IdentityEvent]:
    """The events :func:`encode_events` encoded (raises ``ValueError`` on another version)."""
    version, events = json.loads(data)
    if version != _CODEC_VERSION:
        raise ValueError(f"ingest journal codec {version} is not {_CODEC_VERSION}")
    moments = _Moments()
    return [_decode_event(item, moments) for item in events]


def _outcome_result(index: int, o: EventOutcome, gpc: bool) -> dict[str, Any]:
    """One event's outcome as the synchronous answer gives it (``results[]`` of
    ``IngestResponse``): counts, identifier types, pointers and reasons, no identifier value."""
    result: dict[str, Any] = {
        "index": index,
        "outcome": o.outcome.value,
        "new_identifiers": o.new_identifiers,
        "refused": [
            {
                "pointer": f"#/events/{index}/identifiers/{r.position}",
                "type": r.hashed.type,
                "reason": r.reason.value,
                "detail": r.detail,
            }
            for r in o.refusals
        ],
        "facts": {
            "stored": o.facts_stored,
            "quarantined": o.facts_quarantined,
            "dropped": o.facts_dropped,
        },
    }
    if gpc:
        result["consents"] = {"recorded": o.consents_recorded, "dropped": o.consents_dropped}
    if o.outcome is Outcome.DUPLICATE:
        result["deduplicated"] = True
    return result


# The result of an event with nothing to say beyond its counts (no refusal, no consent counts,
# not a duplicate: nearly every event), as text: see _results_json.
_PLAIN_RESULT = (
    '{"index":%d,"outcome":%s,"new_identifiers":%d,"refused":[],'
    '"facts":{"stored":%d,"quarantined":%d,"dropped":%d}}'
)
_OUTCOME_JSON = {outcome: json.dumps(outcome.value) for outcome in Outcome}


def _results_json(outcomes: Sequence[EventOutcome], gpc: bool) -> str:
    """A job's result document: exactly the text of ``json.dumps({"results": [_outcome_result(i,
    o, gpc) ...], "refused_identifiers": n}, separators=(",", ":"))``, the same bytes in the
    applied marker and the job row, built without a dict per event for the plain ones.

    Why: it is made inside the apply transaction for every event of every job (10,000 per
    transaction), and the dicts and their encoding were ~3 % of the applier's CPU (stop 45's
    py-spy); a plain event's counts are integers and its outcome one of six fixed words, so its
    text is one format. The others (refusals carry details, GPC adds consent counts, duplicates
    their flag) go through ``json.dumps`` as before (tests/services/test_async_results.py
    compares both over every kind of outcome).
    """
    parts: list[str] = []
    refused = 0
    for index, o in enumerate(outcomes):
        if o.refusals or gpc or o.outcome is Outcome.DUPLICATE:
            parts.append(json.dumps(_outcome_result(index, o, gpc), separators=(",", ":")))
            # Distinct identifiers per event, as the synchronous answer counts.
            refused += len(o.refused_identifiers)
        else:
            parts.append(
                _PLAIN_RESULT
                % (
                    index,
                    _OUTCOME_JSON[o.outcome],
                    o.new_identifiers,
                    o.facts_stored,
                    o.facts_quarantined,
                    o.facts_dropped,
                )
            )
    return '{"results":[' + ",".join(parts) + '],"refused_identifiers":' + str(refused) + "}"


class _KeptBatches:
    """Batches this process accepted, as validated (job id -> seq, GPC flag, events), kept for
    its own applier, up to ``max_events`` events (beyond that the applier decodes the journal
    rows, as any other process's applier does)."""

    def __init__(self, max_events: int) -> None:
        self._max_events = max_events
        self._events = 0
        self._batches: dict[str, tuple[int | None, bool, list[IdentityEvent]]] = {}
        self._lock = threading.Lock()

    def keep(self, job_id: str, gpc: bool, events: list[IdentityEvent]) -> bool:
        """Keep a batch before its journal row is appended (so its applier never finds the row
        without it); whether it was kept (not when that would pass ``max_events``)."""
        with self._lock:
            if self._events + len(events) > self._max_events:
                return False
            self._batches[job_id] = (None, gpc, events)
            self._events += len(events)
            return True

    def placed(self, job_id: str, seq: int) -> None:
        """The batch's row was appended with ``seq``."""
        with self._lock:
            kept = self._batches.get(job_id)
            if kept is not None:
                self._batches[job_id] = (seq, kept[1], kept[2])

    def take(self, job_id: str) -> tuple[bool, list[IdentityEvent]] | None:
        """The batch's GPC flag and events, no longer kept; ``None`` if it was not kept."""
        with self._lock:
            kept = self._batches.pop(job_id, None)
            if kept is None:
                return None
            self._events -= len(kept[2])
            return kept[1], kept[2]

    def forget_before(self, seq: int) -> None:
        """Drop the batches whose rows are below ``seq`` (the oldest row queued): they left the
        queue without this process's applier (another process's applier settled them)."""
        with self._lock:
            for job_id, (placed, _, events) in list(self._batches.items()):
                if placed is not None and placed < seq:
                    del self._batches[job_id]
                    self._events -= len(events)

    def __len__(self) -> int:
        return len(self._batches)


_Opened = tuple[QueuedBatch, bool, list[IdentityEvent]]


@dataclass(frozen=True, slots=True)
class _Ahead:
    """The batches queued after a group, opened and prepared (:meth:`IngestService.prepare`,
    one part per look at the queue, in order) while that group's transaction ran; ``parts``
    is ``None`` when preparing failed (the opened events are still good)."""

    opened: list[_Opened]
    parts: list[PreparedEvents] | None


class _AheadPreparer(threading.Thread):
    """Opens and prepares the batches queued after ``after_seq``, as they arrive, until
    :meth:`finish` (the applier's thread writes the group before them meanwhile: see
    :meth:`AsyncIngest.apply_once`)."""

    def __init__(self, service: AsyncIngest, after_seq: int) -> None:
        super().__init__(name="idgraph-ingest-prepare-ahead", daemon=True)
        self._service = service
        self._after_seq = after_seq
        self.done = threading.Event()
        self.ahead: _Ahead | None = None

    def run(self) -> None:
        try:
            self.ahead = self._service._prepare_ahead(self._after_seq, self.done)
        except Exception:  # a bug here must not pass silently; the applier prepares instead
            log.exception("ingest_journal_prepare_ahead_error")

    def finish(self) -> _Ahead | None:
        """Stop looking for more batches (the group's write returned); what was prepared."""
        self.done.set()
        self._service._arrived.set()  # wakes the preparer if it waits for arrivals
        self.join()
        return self.ahead


class AsyncIngest:
    """Submit batches to the journal, read jobs, apply queued batches (see the module doc)."""

    def __init__(
        self,
        ingest: IngestService,
        journal: SqliteIngestJournal,
        sealer: JournalSealer,
        limits: AsyncIngestLimits,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._ingest = ingest
        self._journal = journal
        self._sealer = sealer
        self._limits = limits
        self._clock = clock
        self._queued = threading.Event()  # set by submit: the applier wakes at once
        # Also set by submit: wakes the prepare-ahead thread (see _prepare_ahead).
        self._arrived = threading.Event()
        # The queued event count the applier last saw, and since when (ms): the backlog has
        # not grown since then (see due_in_s). Only the applier's thread uses it.
        self._seen: tuple[int, int] | None = None
        # Applied jobs whose consent audit entries could not be appended after the commit:
        # job id -> the error (it carries the entries). Retried by the applier; the job shows
        # the error until they are written. Shared with with_ingest's copies (one applier).
        self._audit_pending: dict[str, ConsentAuditError] = {}
        self._audit_lock = threading.Lock()
        # Batches this process accepted, as validated, for its own applier (see _open).
        # Shared with with_ingest's copies (one applier).
        self._kept = _KeptBatches(2 * limits.apply_max_events if limits.keep_accepted else 0)
        # The UTC day whose spent journal keys were last shredded (see housekeep).
        self._keys_checked: date | None = None
        # The batches after the last group applied, prepared while it was written (see
        # apply_once). Only the applier's thread reads and sets it.
        self._ahead: _Ahead | None = None

    def with_ingest(self, ingest: IngestService) -> AsyncIngest:
        """The same journal applied through ``ingest`` (an app's copy, reporting to its
        metrics: ``IngestService.with_metrics``)."""
        clone = copy.copy(self)
        clone._ingest = ingest
        return clone

    @property
    def limits(self) -> AsyncIngestLimits:
        """The journal's limits."""
        return self._limits

    def submit(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        *,
        key_id: str,
        gpc_proof: bytes | None = None,
    ) -> AcceptedJob:
        """Validate the batch (as :meth:`IngestService.ingest`: same errors, nothing queued on
        any), seal it and queue it durably; returns once the journal's commit is on disk."""
        events = self._ingest.validate_batch(requests, gpc_proof=gpc_proof)
        gpc_flag = b"1" if gpc_proof is not None else b"0"
        now = self._clock()
        job_id = "job_" + secrets.token_hex(12)
        seal_key = _seal_key(now.date())
        # The GPC flag rides inside the sealed bytes: the job's answer shows consent counts
        # exactly when the synchronous answer would.
        # Compressed (zlib level 1, ~1 us per event) before sealing: the journal row is written
        # at the append and zeroed at the settle (secure_delete), so its size is paid twice.
        # Compressing before encrypting leaks nothing here: the ciphertext's length is seen by
        # no one outside the data dir, and one batch holds one caller's data only.
        sealed = self._sealer.encrypt(
            seal_key, job_id, zlib.compress(gpc_flag + encode_events(events), 1)
        )
        # Kept for this process's applier before the row exists, so the applier never finds
        # the row without it (the entry gets its seq once the append returned); dropped again
        # if the append fails.
        kept = self._kept.keep(job_id, gpc_proof is not None, events)
        try:
            seq = self._journal.append(
                job_id,
                key_id,
                len(events),
                seal_key,
                sealed,
                _ms(now),
                max_events=self._limits.max_queued_events,
                retry_after_s=self._limits.retry_after_s,
            )
        except BaseException:
            if kept:
                self._kept.take(job_id)
            raise
        if kept:
            self._kept.placed(job_id, seq)
        self._queued.set()
        self._arrived.set()
        return AcceptedJob(job_id, len(events))

    def job(self, job_id: str, *, key_id: str) -> JobStatus:
        """The job ``key_id`` submitted; :class:`IngestJobNotFoundError` for an unknown id,
        another key's job, or an expired result (the same answer for all three)."""
        record = self._journal.job(job_id, _ms(self._clock()))
        if record is None or not secrets.compare_digest(record.owner, key_id):
            raise IngestJobNotFoundError(job_id)
        results: list[dict[str, Any]] | None = None
        refused: int | None = None
        error: str | None = None
        if record.result is not None:
            stored = json.loads(record.result)
            results = stored.get("results")
            refused = stored.get("refused_identifiers")
            error = stored.get("error")
        if error is None and job_id in self._audit_pending:
            error = ConsentAuditError.__name__  # applied; its audit entries not written yet
        queued_at = _from_ms(record.queued_ms)
        assert queued_at is not None  # noqa: S101 - a NOT NULL column
        return JobStatus(
            record.job_id,
            record.status,
            record.events,
            queued_at,
            _from_ms(record.finished_ms),
            _from_ms(record.expires_ms),
            results,
            refused,
            error,
        )

    def queued_events(self) -> int:
        """Events in the journal not applied yet."""
        return self._journal.queued_events()

    def pending_audits(self) -> int:
        """Applied jobs whose consent audit entries are still to be written."""
        return len(self._audit_pending)

    def retry_consent_audits(self) -> int:
        """Append the consent audit entries of applied jobs whose append failed after their
        commit (oldest first); how many jobs are still pending. Raises
        :class:`StoreUnavailableError` while the audit log stays unavailable (the applier
        retries on its next loop). Not re-applied: a re-apply would be a message-id duplicate
        and would write nothing."""
        with self._audit_lock:
            for job_id, error in list(self._audit_pending.items()):
                self._ingest.retry_consent_audit(error)
                del self._audit_pending[job_id]
                log.info("consent_audit_appended", job_id=job_id, entries=len(error.drafts))
            return len(self._audit_pending)

    # -- the applier's side ---------------------------------------------------------------------

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until a batch is submitted in this process (since the last
        :meth:`clear_wake`) or ``timeout_s`` passed."""
        self._queued.wait(timeout_s)

    def clear_wake(self) -> None:
        """Forget submissions seen so far (the applier is about to look at the journal)."""
        self._queued.clear()

    def wake(self) -> None:
        """Wake a waiting applier (at stop)."""
        self._queued.set()

    def due_in_s(self) -> float | None:
        """How long until the applier should apply: ``None`` with nothing queued, ``0`` when
        ``apply_max_events`` are queued, the oldest batch has waited ``apply_linger_s``, or the
        backlog has not grown for ``apply_idle_s`` (no batch arrived meanwhile)."""
        events, oldest_ms = self._journal.backlog()
        if oldest_ms is None:
            self._seen = None
            return None
        if events >= self._limits.apply_max_events:
            return 0.0
        now_ms = _ms(self._clock())
        if self._seen is None or self._seen[0] != events:
            self._seen = (events, now_ms)  # grown (or drained) since the last look
        waited_s = (now_ms - oldest_ms) / _MS
        quiet_s = (now_ms - self._seen[1]) / _MS
        limits = self._limits
        return max(0.0, min(limits.apply_linger_s - waited_s, limits.apply_idle_s - quiet_s))

    def apply_once(self) -> int:
        """Apply the oldest queued batches (whole, up to ``apply_max_events`` events) in one
        transaction; how many events were applied or failed (0: the journal is empty).

        A batch that cannot be opened (its key gone, the row tampered with) or that fails alone
        is recorded ``failed`` and removed; a store that is unavailable leaves everything
        queued (raises :class:`StoreUnavailableError`; the caller retries).

        Pipelined: while the group's transaction runs, a second thread opens and prepares the
        batches queued after it (:meth:`IngestService.prepare`: hashing, message digests, ids
        with stored keys; no graph access), as the bulk path prepares its next batch while
        one commits (``services.bulk``). The next call applies them first if they are still
        the oldest queued (with any batch queued since, prepared then); otherwise (a failed
        or raced write: the queue's head is not what was prepared) the preparation is
        dropped, as a failed write's ids are, and the opened events are reused. Why: a
        group's preparation was ~0.85 s of the applier's ~5 s per 20k events (stop 44),
        all of it between two transactions; the transaction mostly runs in SQLite without
        the GIL, so the preparation overlaps it on a second core. Nothing else changes: the
        same batches in the same order, one transaction per group, the markers and the
        watermark in it."""
        if self._journal.unsettled:  # the last settlement failed: its markers first
            self._journal.reconcile()
        batches = self._journal.queued(self._limits.apply_max_events)
        ahead, self._ahead = self._ahead, None
        if not batches:
            return 0
        self._kept.forget_before(batches[0].seq)
        leading, parts, spare = _leading(ahead, batches)
        opened, failed = self._open(batches[len(leading) :], spare)
        opened = leading + opened
        now_ms = _ms(self._clock())
        keep_ms = self._limits.keep_results_s * _MS
        if failed:
            self._journal.fail(failed, now_ms, keep_ms)
        if opened:
            try:
                self._apply(opened, now_ms, keep_ms, ahead=parts, pipelined=True)
            except JournalRaceError:
                # Applied already (another process; or this one, its settlement not done):
                # settle what the graph's markers say, then the applier looks again.
                self._journal.reconcile()
                return sum(batch.events for batch in batches)
            except StoreUnavailableError:  # all stays queued, retried
                raise
            except IdGraphError:
                if len(opened) == 1:
                    (batch, _, _) = opened[0]
                    log.exception("ingest_job_failed", job_id=batch.job_id)
                    self._journal.fail([_failure(batch, None)], now_ms, keep_ms)
                else:  # one batch spoiled the group: each alone, so the others are applied
                    for item in opened:
                        self._apply_alone(item, now_ms, keep_ms)
        return sum(batch.events for batch in batches)

    def _prepare_ahead(self, after_seq: int, done: threading.Event) -> _Ahead | None:
        """The batches queued after ``after_seq``, opened and prepared as they arrive (up to
        ``apply_max_events`` events: the next group at most) until ``done``; ``None`` when none
        arrived. Arrivals from a submit in this process wake it; others' are seen within
        :data:`APPLIER_PROCESS_POLL_S`. Runs on the prepare-ahead thread. A batch that cannot
        be opened, or a failed preparation, ends it (the next group is then prepared by the
        applier, as before)."""
        opened: list[_Opened] = []
        parts: list[PreparedEvents] | None = []
        room = self._limits.apply_max_events
        while not done.is_set() and room > 0 and parts is not None:
            self._arrived.clear()  # before looking: a batch appended after this wakes the wait
            try:
                batches = self._journal.queued(room, after_seq=after_seq)
            except IdGraphError:
                break
            fitting: list[QueuedBatch] = []
            for batch in batches:  # whole batches within the room (queued() gives one at least)
                if batch.events > room - sum(b.events for b in fitting):
                    break
                fitting.append(batch)
            if not fitting:
                if batches:
                    break  # the next batch does not fit in this group any more
                if not done.is_set():  # checked after the clear: finish() sets both, then
                    # this returns (set by a submit in this process, or by finish()); a batch
                    # another process queued (the server's, for `idgraph ingest-applier`) sets
                    # nothing here, so the queue is looked at again after a poll's wait.
                    self._arrived.wait(APPLIER_PROCESS_POLL_S)
                continue
            try:
                chunk, failed = self._open(fitting)
            except IdGraphError:
                break
            opened += chunk
            after_seq, room = fitting[-1].seq, room - sum(b.events for b in fitting)
            try:
                if failed:  # the next group's head decides (the applier fails that batch)
                    parts = None
                elif chunk:
                    parts.append(self._ingest.prepare([e for _, _, es in chunk for e in es]))
            except Exception:  # the applier prepares these batches itself, as before
                log.warning("ingest_journal_prepare_ahead_failed", exc_info=True)
                parts = None
        return _Ahead(opened, parts) if opened else None

    def _open(
        self,
        batches: Sequence[QueuedBatch],
        spare: dict[str, tuple[bool, list[IdentityEvent]]] | None = None,
    ) -> tuple[list[tuple[QueuedBatch, bool, list[IdentityEvent]]], list[FinishedJob]]:
        """The batches unsealed and decoded (with their GPC flag), and those that could not be
        (their key gone, their row tampered with) as failures.

        A batch this process accepted is taken as it was validated instead (kept by
        :meth:`submit`): the very events whose encoding was sealed into the row, so unsealing
        and decoding them again (~15 us per event) would only make equal copies. The row
        stays the durable copy: any other process, or this one after a restart, decodes it."""
        opened: list[tuple[QueuedBatch, bool, list[IdentityEvent]]] = []
        failed: list[FinishedJob] = []
        from_memory = 0
        for batch in batches:
            kept = self._kept.take(batch.job_id)
            if kept is None and spare:
                kept = spare.get(batch.job_id)
            if kept is not None:
                gpc, events = kept
                opened.append((batch, gpc, events))
                from_memory += 1
                continue
            try:
                plain = zlib.decompress(
                    self._sealer.decrypt(batch.seal_key, batch.job_id, batch.sealed)
                )
                opened.append((batch, plain[:1] == b"1", decode_events(plain[1:])))
            except (IdGraphError, ValueError, zlib.error) as exc:
                if isinstance(exc, StoreUnavailableError):
                    raise
                failed.append(_failure(batch, exc))
        # Counted (idgraph_ingest_journal_batches_opened): decoding a row costs ~15 us per
        # event more than taking the kept events, so the split explains an applier's CPU.
        metrics = self._ingest.metrics
        metrics.record_opened_batches(JournalBatchSource.MEMORY, from_memory)
        metrics.record_opened_batches(JournalBatchSource.JOURNAL, len(batches) - from_memory)
        return opened, failed

    def _apply_alone(
        self, item: tuple[QueuedBatch, bool, list[IdentityEvent]], now_ms: int, keep_ms: int
    ) -> None:
        try:
            self._apply([item], now_ms, keep_ms)
        except JournalRaceError:
            self._journal.reconcile()
        except StoreUnavailableError:
            raise
        except IdGraphError:
            log.exception("ingest_job_failed", job_id=item[0].job_id)
            self._journal.fail([_failure(item[0], None)], now_ms, keep_ms)

    def _apply(
        self,
        opened: Sequence[_Opened],
        now: int,
        keep: int,
        *,
        ahead: Sequence[PreparedEvents] = (),
        pipelined: bool = False,
    ) -> None:
        """Apply ``opened`` in one transaction (``ahead``: its first batches' events prepared
        already); ``pipelined``: prepare the batches queued after them meanwhile."""
        jobs: list[FinishedJob] = []

        def finish(tx: GraphTransaction, outcomes: list[list[EventOutcome]]) -> None:
            jobs[:] = [
                FinishedJob(batch.seq, batch.job_id, "applied", _results_json(done, gpc))
                for (batch, gpc, _), done in zip(opened, outcomes, strict=True)
            ]
            connection = getattr(tx, "connection", None)
            if connection is None:  # pragma: no cover - only SQLite stores get a journal
                raise StoreUnavailableError("the ingest journal needs the SQLite graph store")
            # The applied markers (and the watermark) commit with the events they stand for.
            self._journal.record_applied(connection, jobs, now, keep)

        def audit_failed(index: int, error: ConsentAuditError) -> None:
            with self._audit_lock:
                self._audit_pending[opened[index][0].job_id] = error

        preparer = _AheadPreparer(self, opened[-1][0].seq) if pipelined else None
        if preparer is not None:
            preparer.start()
        try:
            self._ingest.apply_validated(
                [(api_key_actor(batch.owner), events) for batch, _, events in opened],
                finish,
                audit_failed,
                ahead=ahead,
            )
        finally:
            if preparer is not None:
                self._ahead = preparer.finish()
        # Committed: the journal file forgets the batches and keeps the results. A crash
        # before this leaves the markers, which the next open settles (never applied twice).
        self._journal.settle(jobs, now, keep)

    def expire(self) -> int:
        """Drop job results whose time is up (the applier calls it between drains)."""
        return self._journal.expire(_ms(self._clock()))

    def housekeep(self, *, idle: bool) -> None:
        """The applier's upkeep, each loop: once per UTC day, :meth:`shred_spent_keys`; when
        nothing is queued (``idle``), :meth:`expire` and, if the journal's WAL holds anything,
        :meth:`checkpoint_journal`, so the sealed bytes of applied batches do not stay in old
        WAL frames. Raises :class:`StoreUnavailableError` when a file is busy (the applier
        tries again on its next loop)."""
        today = self._clock().date()
        if self._keys_checked != today:
            self.shred_spent_keys()
            self._keys_checked = today
        if idle:
            self.expire()
            if self._journal.wal_bytes():
                self._journal.checkpoint()

    def checkpoint_journal(self) -> None:
        """Fold the journal file's WAL back and truncate it (an erasure does, with the graph's);
        :class:`StoreUnavailableError` when a reader blocked it."""
        self._journal.checkpoint()

    def shred_spent_keys(self) -> list[str]:
        """Shred the journal's day keys that nothing needs any more; returns their owners.

        Why: a day key seals one UTC day of batches. Once they are all applied (or failed) their
        rows are zeroed, but the key would still open the copies of them that old WAL frames, a
        backup or a copy of the journal file hold, for as long as it lives; shredding it makes
        those copies unreadable (DEVELOPERS.md invariant 1: nothing outlives its purpose).
        Shredded: keys of days before yesterday under which no queued batch is sealed.
        Yesterday's is kept: a batch sealed just before midnight is appended just after, and a
        process whose clock runs behind still seals under it. The keys are listed from the
        vault (one range of its owner index), so a key made by another process, or before a
        restart, is found too; the oldest 1,000 per call (one call a day)."""
        cutoff = _seal_key(self._clock().date() - timedelta(days=1))
        live = self._journal.seal_keys()
        spent = [
            owner
            for owner in self._sealer.owners_starting(_JOURNAL_OWNER_PREFIX)
            if owner < cutoff and owner not in live
        ]
        if spent:
            self._sealer.shred(spent)
            log.info("ingest_journal_keys_shredded", keys=len(spent))
        return spent

    def close(self) -> None:
        """Close the journal's connection (the applier is stopped first)."""
        self._journal.close()


def _leading(
    ahead: _Ahead | None, batches: Sequence[QueuedBatch]
) -> tuple[list[_Opened], list[PreparedEvents], dict[str, tuple[bool, list[IdentityEvent]]]]:
    """What of ``ahead`` the group ``batches`` can use: its opened batches and their
    preparation when they are the group's first batches, else (the queue's head is not what was
    prepared) nothing but their events, by job id, to reuse instead of decoding their rows."""
    if ahead is None:
        return [], [], {}
    seqs = [batch.seq for batch, _, _ in ahead.opened]
    if [batch.seq for batch in batches[: len(seqs)]] == seqs:
        return ahead.opened, ahead.parts or [], {}
    return [], [], {batch.job_id: (gpc, events) for batch, gpc, events in ahead.opened}


def _failure(batch: QueuedBatch, exc: Exception | None) -> FinishedJob:
    # The error's class only: a message could name a value of the batch.
    what = type(exc).__name__ if exc is not None else "apply_failed"
    return FinishedJob(
        batch.seq, batch.job_id, "failed", json.dumps({"error": what}, separators=(",", ":"))
    )


class JournalApplier:
    """The thread that drains the journal: applies at once when a batch arrives, and every
    ``poll_s`` in any case (a batch another process queued, or one left by a crash).

    ``on_first_look`` is called once, on the thread, when it has first read the journal's state
    and before it applies anything: the applier process tells its server it has started there
    (``services.metrics.TalliedMetrics.mark_started``). If it raises, it is logged and called
    again at the next loop."""

    def __init__(
        self,
        service: AsyncIngest,
        poll_s: float = 1.0,
        retry_s: float = 0.5,
        around_apply: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        idle_upkeep_s: float = 0.0,
        on_first_look: Callable[[], None] = lambda: None,
    ) -> None:
        self._service = service
        self._on_first_look: Callable[[], None] | None = on_first_look
        self._poll_s = poll_s
        self._retry_s = retry_s
        # The idle upkeep (AsyncIngest.housekeep(idle=True)) at most this often; 0: on every
        # idle loop (the server's thread, woken by submits and polling once a second).
        self._idle_upkeep_s = idle_upkeep_s
        self._upkept_at: float | None = None
        # Entered around each apply: the server turns automatic collection off there and
        # collects the young generation after (api.collector.BatchCollector.applying): a
        # 10,000-event apply keeps ~10^6 containers alive at once, and the collector walked
        # and promoted them over and over, freeing nothing.
        self._around_apply = around_apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            # In a copy of the starter's context: fields it bound for its log lines (the
            # applier process's ``process=ingest-applier``) are on the thread's lines too.
            self._thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._run,),
                name="idgraph-ingest-applier",
                daemon=True,
            )
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the transaction in progress (queued batches stay queued)."""
        self._stop.set()
        self._service.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _upkeep_due(self) -> bool:
        now = time.monotonic()
        if self._upkept_at is not None and now - self._upkept_at < self._idle_upkeep_s:
            return False
        self._upkept_at = now
        return True

    def _run(self) -> None:
        service = self._service
        while not self._stop.is_set():
            service.clear_wake()  # before looking: a batch queued after this wakes the wait
            try:
                if service.pending_audits():
                    # Retried each loop; applying goes on meanwhile (its commits do not wait
                    # for the audit log, as on the synchronous path).
                    with contextlib.suppress(StoreUnavailableError):
                        service.retry_consent_audits()
                due = service.due_in_s()
                if self._on_first_look is not None:
                    self._on_first_look()
                    self._on_first_look = None
                with contextlib.suppress(StoreUnavailableError):  # retried next loop
                    service.housekeep(idle=due is None and self._upkeep_due())
                if due is None or due > 0:
                    # Nothing queued (woken by a submission), or lingering for more batches.
                    service.wait_for_work(self._poll_s if due is None else min(due, self._poll_s))
                    continue
                with self._around_apply():
                    applied = service.apply_once()
            except StoreUnavailableError as exc:
                log.warning("ingest_journal_apply_retry", error=type(exc).__name__)
                self._stop.wait(self._retry_s)
                continue
            except Exception:  # a bug must not end the applier silently: logged, retried
                log.exception("ingest_journal_apply_error")
                self._stop.wait(self._retry_s)
                continue
            if not applied:
                service.wait_for_work(self._poll_s)

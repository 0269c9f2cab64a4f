"""The stream ingest worker: Kafka records in, the ingest use case, offsets out.

One poll is one batch and one engine transaction, through the same use case as the API
(:class:`services.ingest.IngestService`: validation, normalization, PII scan, one transaction,
consent audit). The order of every batch is what makes it safe:

1. decode and validate each record, then validate, normalize and PII-scan the poll's requests
   in one call (``IngestService.events``: their values reach the scanner as one batch, as an
   API batch's do); a record that cannot be applied becomes a **dead letter** (by reference,
   :mod:`stream.dead_letters`) and its partition keeps flowing;
2. apply the valid ones in **one graph transaction** (``IngestService.commit``), each with its
   message id: the sender's ``message_id``/``messageId`` if it has one, else the record's own
   coordinates (``kafka:<topic>:<partition>:<offset>``). The id's keyed digest is recorded in
   the same transaction, so a redelivered record is a no-op (``duplicate``);
3. wait until the dead letters are acknowledged by the broker;
4. **commit the offsets** only now, without waiting for the broker's answer (it comes during the
   next poll; the last one is waited for before the worker leaves the group). A crash (SIGKILL)
   anywhere before this step, or before its commit reached the broker, redelivers the batch and
   step 2 skips what was applied: nothing lost, nothing applied twice.

**Pipelined** (:meth:`StreamWorker.run`): step 2 of a batch runs on a writer thread while the
main thread polls and runs step 1 of the next one; steps 3-4 of a batch run on the main thread
once its step 2 returned, before the next batch's step 2 starts. So batches are applied and
their offsets committed strictly in order, one at a time, as before; what overlaps is the graph
commit (SQLite's statements and fsync release the GIL) with the next poll's decoding,
validation and PII scan, which before waited for it. A batch whose step 2 fails stops the
worker as before: its offsets and the next batch's are not committed (both are redelivered).

**Backpressure**: the worker holds two batches at most (``--batch-size`` each: one being
applied, the next being validated) and polls no more until the first is committed; librdkafka's
prefetch is bounded (``queued.max.messages.kbytes``). When the store is unavailable the batch is
retried with exponential backoff up to ``--max-retry-seconds``, then the worker exits non-zero
without committing (its supervisor restarts it; the batch is redelivered).

**Rebalances**: partitions are only reassigned inside ``consume()``, where no batch is between
its step 1 and its step 2 (step 1 follows the poll), and the revoke callback first finishes the
batch in flight (its steps 2-4; its offsets committed and the answer waited for), so a revoked
partition leaves with nothing in flight. A commit refused because the group moved on anyway (a
batch that took longer than ``max.poll.interval.ms``) only means the new owner reads those
records again, and step 2 makes that harmless.

**SIGTERM / SIGINT**: the batch in hand is finished and committed, then the consumer leaves the
group (``close()``), so its partitions move at once instead of after the session timeout.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, ValidationError

from identity.errors import (
    BatchValidationError,
    IdGraphError,
    InputLimitError,
    InvalidFieldError,
    StoreUnavailableError,
)
from identity.model import EventOutcome, IdentityEvent, Outcome
from identity.store.port import GraphStore
from privacy.consent.recording import ConsentAuditError
from privacy.dsr.model import DsrCaller, DsrSubmission
from privacy.dsr.service import Submitted
from services.dsr_views import DsrCreate
from services.gc_policy import collector_paused
from services.ingest import ConsentResult, ConsentSubmission
from services.inputs import (
    ConsentRequest,
    IdentifyInput,
    IdentifyRequest,
    identify_input,
    pointer_from_location,
)
from stream.dead_letters import DeadLetter
from stream.envelopes import EnvelopeError, load_object, message_id_of, parse
from stream.metrics import StreamMetrics
from stream.relay import OutboxRelay

log = structlog.get_logger("idgraph.stream")

MESSAGE_ID_HEADERS = ("message_id", "messageId", "idgraph-message-id")
GPC_HEADERS = ("sec-gpc", "Sec-GPC")
_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class TopicKind(StrEnum):
    """What the records of a topic are, and so which use case applies them."""

    INGEST = "ingest"  # identify/track events: IngestService.commit, one batch per poll
    CONSENT = "consent"  # consent signals: IngestService.record_consent, as POST /v1/consent
    DSR = "dsr"  # data-subject requests: DsrService.submit, as POST /v1/dsr


class EventIngest(Protocol):
    """The part of the ingest use case the worker calls (``services.ingest.IngestService``)."""

    def events(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        pointers: Sequence[str] | None = None,
    ) -> Sequence[IdentityEvent | InputLimitError | BatchValidationError]:
        """Validate, normalize and PII-scan requests (their values as one scanner batch): one
        event, or the error that request alone would raise, per request. Writes nothing."""
        ...

    def commit(self, events: Sequence[IdentityEvent], actor: str) -> list[EventOutcome]:
        """Apply validated events in one transaction, then audit their consent records."""
        ...

    def record_consent(self, submission: ConsentSubmission, *, actor: str) -> ConsentResult:
        """Validate and record consent signals (one transaction), then audit them."""
        ...

    def retry_consent_audit(self, error: ConsentAuditError) -> None:
        """Append the consent audit entries a failed append left out."""
        ...


class DsrIntake(Protocol):
    """The part of the DSR use case the worker calls (``privacy.dsr.service.DsrService``)."""

    def submit(self, submission: DsrSubmission, caller: DsrCaller) -> Submitted:
        """Validate (one pass) and accept a request, idempotent by request id."""
        ...


class WorkerStoppedError(IdGraphError):
    """The worker gave up on a batch (store unavailable too long); nothing was committed."""

    code = "stream-worker-stopped"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How one worker consumes; every field is an ``idgraph consume`` option."""

    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    dead_letter_topic: str
    consent_topics: tuple[str, ...] = ()
    dsr_topics: tuple[str, ...] = ()
    dsr_owner: str = "stream"
    source: str = "kafka"
    batch_size: int = 500
    poll_timeout_s: float = 1.0
    max_retry_s: float = 300.0
    dedup_window: timedelta = timedelta(days=7)
    lag_interval_s: float = 5.0
    audience_interval_s: float = 300.0
    client_config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = [*self.topics, *self.consent_topics, *self.dsr_topics]
        if len(set(named)) != len(named):
            raise ValueError("a topic can be of one kind only (ingest, consent or DSR)")

    @property
    def subscriptions(self) -> list[str]:
        """Every topic the worker reads."""
        return [*self.topics, *self.consent_topics, *self.dsr_topics]

    def kind(self, topic: str) -> TopicKind:
        """Which use case applies the records of ``topic``."""
        if topic in self.consent_topics:
            return TopicKind.CONSENT
        if topic in self.dsr_topics:
            return TopicKind.DSR
        return TopicKind.INGEST

    @property
    def actor(self) -> str:
        """Who the audit log says wrote the batch's consent records."""
        return f"stream:{self.group_id}"

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings of the consumer (``client_config`` may override any)."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "client.id": f"idgraph-consume-{self.group_id}",
            # Offsets are committed by the worker, after the graph commit, never by a timer.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Bounded prefetch: backpressure reaches the broker instead of this process' memory.
            "queued.max.messages.kbytes": 16384,
            "fetch.max.bytes": 16 * 1024 * 1024,
            "max.poll.interval.ms": 300_000,
            "session.timeout.ms": 30_000,
            "enable.partition.eof": False,
            **self.client_config,
        }

    def producer_config(self) -> dict[str, Any]:
        """librdkafka settings of the dead-letter and outbox producer."""
        client = {k: v for k, v in self.client_config.items() if not k.startswith("group.")}
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"idgraph-publish-{self.group_id}",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            **client,
        }


@dataclass(slots=True)
class BatchReport:
    """What one batch did (counts only)."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    outcomes: list[EventOutcome] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Pending:
    message: Message
    event: IdentityEvent


@dataclass(slots=True)
class _Prepared:
    """A poll after step 1: its report so far, the events to apply, the dead letters found,
    the consent and DSR records (applied in step 2, one use-case call each) and the last offset
    per partition."""

    report: BatchReport
    pending: list[_Pending]
    dead: list[DeadLetter]
    requests: list[Message]
    last: dict[tuple[str, int], int]


# What a batch's step 2 returns: its report, its dead letters and the offsets to commit.
_Applied = tuple[BatchReport, list[DeadLetter], dict[tuple[str, int], int]]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """An ingest record's request and the message id it is applied under."""

    request: IdentifyRequest | IdentifyInput
    message_id: str


def _header(message: Message, names: Sequence[str]) -> str | None:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name in names and value:
            return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return None


def _coordinates(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record (always set on one without error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise WorkerStoppedError("the client returned a record without topic/partition/offset")
    return topic, partition, offset


class StreamWorker:
    """Consumes ingest topics into the graph; see the module docstring."""

    def __init__(
        self,
        config: WorkerConfig,
        ingest: EventIngest,
        store: GraphStore,
        message_digest: Callable[[str, str], bytes],
        metrics: StreamMetrics,
        *,
        dsr: DsrIntake | None = None,
        publish_topics: Mapping[str, str] | None = None,
        audience_changes: Callable[[], object] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._ingest = ingest
        self._store = store
        self._dsr = dsr
        if config.dsr_topics and dsr is None:
            raise ValueError("DSR topics need the DSR service")
        self._digest = message_digest
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer = Producer(config.producer_config())
        self._relay = (
            OutboxRelay(store, self._producer, publish_topics, metrics)
            if publish_topics is not None
            else None
        )
        # Audience-membership change passes (services.audience_changes), run by the publisher.
        self._audience_changes = audience_changes if self._relay is not None else None
        self._last_audiences = 0.0
        self._assigned: set[tuple[str, int]] = set()
        self._last_lag = 0.0
        self._last_forget = 0.0
        # Offset commits sent and not answered yet (their start times, oldest first: the
        # coordinator answers one consumer's commits in order), and the last offsets sent.
        self._commits_in_flight: collections.deque[float] = collections.deque()
        self._last_offsets: list[TopicPartition] = []
        # The pipeline (run): the batch whose step 2 runs on the writer thread, and the totals of
        # the batches finished (steps 3-4 done) in this run, with when the last one finished.
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future[_Applied] | None = None
        self._totals = BatchReport()
        self._batches = 0
        self._last_finished = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and leave (signal-safe)."""
        self._stop.set()

    def run(
        self, max_batches: int | None = None, idle_exit_s: float | None = None
    ) -> dict[str, float]:
        """Consume until :meth:`stop` (or ``max_batches`` batches, or ``idle_exit_s`` without
        records while every assigned partition is read to its end: tests and one-shot catch-up
        runs), then leave the group. Returns the totals and the seconds from the first record
        polled to the last batch committed (its offsets sent: their answer is waited for as
        the worker leaves, outside that span)."""
        consumer = Consumer({**self.config.consumer_config(), "on_commit": self._on_commit})
        self._consumer = consumer
        consumer.subscribe(
            self.config.subscriptions,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._totals, self._batches = BatchReport(), 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-commit")
        submitted = 0
        first: float | None = None
        self._last_finished = idle_since = time.monotonic()
        finished = self._batches
        unknown_since: float | None = None  # since when the end offsets could not be read
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.config.batch_size, self.config.poll_timeout_s)
                if messages:
                    first = first or time.monotonic()
                    idle_since = time.monotonic()
                    self._submit(messages)
                    submitted += 1
                else:
                    self.finish_in_flight()  # nothing to overlap it with
                if self._batches != finished:
                    finished, idle_since = self._batches, time.monotonic()
                self._housekeeping()
                if not self._assigned:
                    # Waiting for partitions (joining, or a rebalance) is not being idle.
                    idle_since = time.monotonic()
                if max_batches is not None and submitted >= max_batches:
                    break
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    caught_up = self._caught_up()
                    if caught_up:
                        break
                    # Records are waiting that no fetch has returned yet (a slow broker, or a
                    # fetch still in flight right after an assignment): not idle, keep going.
                    # A broker that cannot say for longer than the outage budget ends the run
                    # non-zero: it may hold a backlog, so exiting 0 would claim a catch-up.
                    idle_since = time.monotonic()
                    if caught_up is None:
                        unknown_since = unknown_since or idle_since
                        if idle_since - unknown_since > self.config.max_retry_s:
                            raise WorkerStoppedError(
                                "the broker did not report the end offsets for "
                                f"{self.config.max_retry_s:.0f} s: the backlog is unknown"
                            )
                    else:
                        unknown_since = None
            self.finish_in_flight()  # stopped, or done: the batch in hand is committed too
        finally:
            # On an error: the batch in flight cannot be abandoned half-way (it is one
            # transaction either way), so it is waited for; its offsets are not committed.
            self._abandon_in_flight()
            self._writer.shutdown(wait=True)
            self._writer = None
            # The last batch's offsets may still be on their way: wait for them once, here,
            # instead of after every batch (a crash before this only redelivers that batch).
            self._confirm_commits()
            # Leaves the group at once (its partitions move now, not after the session timeout).
            consumer.close()
            self._producer.flush(10)
            self._consumer = None
        totals = self._totals
        return {
            "records": totals.records,
            "applied": totals.applied,
            "duplicates": totals.duplicates,
            "dead_letters": totals.dead_letters,
            "batches": self._batches,
            "seconds": round(self._last_finished - first, 3) if first is not None else 0.0,
        }

    def _submit(self, messages: Sequence[Message]) -> None:
        """Step 1 of ``messages`` here, while the batch in flight (if any) is applied; then
        that batch is finished (steps 3-4) and this one's step 2 handed to the writer."""
        with collector_paused():
            prepared = self.prepare(messages)
        self.finish_in_flight()
        if self._writer is None:  # pragma: no cover - only run() submits
            raise WorkerStoppedError("the worker is not running")
        context = contextvars.copy_context()  # the logger's bound fields travel with it
        self._in_flight = self._writer.submit(context.run, self._applied_paused, prepared)

    def _applied_paused(self, prepared: _Prepared) -> _Applied:
        with collector_paused():
            return self.applied(prepared)

    def finish_in_flight(self) -> BatchReport | None:
        """Wait for the batch in flight (if any), then steps 3-4 for it: its dead letters
        acknowledged, its offsets committed, its counts added to the run's. Returns its report
        (``None`` if no batch was in flight). Raises what its step 2 raised (nothing of it is
        committed then)."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return None
        report, dead, last = future.result()
        self.dead_letter(dead, report)
        self._commit(last)
        totals = self._totals
        totals.records += report.records
        totals.applied += report.applied
        totals.duplicates += report.duplicates
        totals.dead_letters += report.dead_letters
        self._batches += 1
        self._last_finished = time.monotonic()
        return report

    def _abandon_in_flight(self) -> None:
        """Wait for the batch in flight without committing its offsets (the worker is stopping
        on an error): it is redelivered, and its message ids make that a no-op."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            with contextlib.suppress(Exception):  # its own error, if any, changes nothing now
                future.result()

    # -- one batch -------------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> BatchReport:
        """Apply one polled batch and commit its offsets (steps 1-4 of the module docstring).

        The batch is applied with automatic garbage collection off, and the young generation
        is collected once it is done (``collector_paused``, as the bulk path and the ingest
        appliers do). Why: a poll's records, requests, events and rows (some 10^5 containers at
        500 records) are alive together until the commit and form no cycles, so every
        collection during the batch walked them again and freed nothing. Stop 51, 27,250
        records (100k identifiers) through ``process`` alone: 2,190 young, 199 middle and 18
        full collections, 1.4-1.6 s; paused, 55 young ones, 0.05 s, and 0.7 s (6 %) less CPU in
        both of two alternating pairs. Collection is on again between batches.
        """
        with collector_paused():
            report, dead, last = self.apply(messages)
        self.dead_letter(dead, report)
        self._commit(last)
        return report

    def apply(self, messages: Sequence[Message]) -> _Applied:
        """Steps 1-2 of the module docstring for ``messages``: apply what can be applied and
        return the dead letters (not yet produced) and the last offset per partition (not yet
        committed). :meth:`process` and the dead-letter replay build on it."""
        return self.applied(self.prepare(messages))

    def prepare(self, messages: Sequence[Message]) -> _Prepared:
        """Step 1 for ``messages``: decode and validate them; writes nothing."""
        report = BatchReport(records=len(messages))
        self._metrics.batch_size.observe(len(messages))
        decoded: list[tuple[Message, _Decoded | DeadLetter]] = []
        requests: list[Message] = []
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("stream_record_error", error=error.name())
                continue
            topic, partition, offset = _coordinates(message)
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
            if self.config.kind(topic) is not TopicKind.INGEST:
                requests.append(message)
                continue
            decoded.append((message, self._decode(message)))
        pending, dead = self._events(decoded)
        return _Prepared(report, pending, dead, requests, last)

    def applied(self, prepared: _Prepared) -> _Applied:
        """Step 2 for a prepared poll: its events in one transaction, then its consent and DSR
        records; returns its report, every dead letter and the offsets to commit."""
        report, dead = prepared.report, prepared.dead
        if prepared.pending:
            dead += self._apply(prepared.pending, report)
        for message in prepared.requests:
            # Consent signals and DSR requests: one use-case call each, in partition order.
            letter = self._apply_request(message, report)
            if letter is not None:
                dead.append(letter)
        return report, dead, prepared.last

    def _decode(self, message: Message) -> _Decoded | DeadLetter:
        """The record's envelope and request, or the dead letter of a record that has none."""
        topic, partition, offset = _coordinates(message)
        header_id = _header(message, MESSAGE_ID_HEADERS)
        try:
            envelope = parse(message.value(), self.config.source, header_id)
        except EnvelopeError as exc:
            return self._letter(message, exc.reason, (f"{exc.pointer}: {exc}",), header_id)
        message_id = envelope.message_id or f"kafka:{topic}:{partition}:{offset}"
        # Most records are certified without a model (services.inputs.identify_input, as bulk
        # rows are); the rest go through it, so a rejected record's dead letter reads exactly as
        # POST /v1/identify would answer it.
        certified = identify_input(envelope.request)
        if certified is not None:
            return _Decoded(certified, message_id)
        try:
            request = IdentifyRequest.model_validate(envelope.request)
        except ValidationError as exc:
            return self._letter(message, *_rejection(exc), message_id)
        return _Decoded(request, message_id)

    def _events(
        self, decoded: Sequence[tuple[Message, _Decoded | DeadLetter]]
    ) -> tuple[list[_Pending], list[DeadLetter]]:
        """The poll's decoded requests through the ingest use case in one call, so their values
        reach the PII scanner as one batch (the NER model runs once per poll, as for an API
        batch or a bulk chunk); each request is judged on its own, as alone. Pending events
        and dead letters come back in record order."""
        valid = [item for _, item in decoded if isinstance(item, _Decoded)]
        results = iter(self._ingest.events([item.request for item in valid]) if valid else ())
        pending: list[_Pending] = []
        dead: list[DeadLetter] = []
        for message, item in decoded:
            if isinstance(item, DeadLetter):
                dead.append(item)
                continue
            result = next(results)
            if isinstance(result, InputLimitError | BatchValidationError):
                dead.append(self._letter(message, *_rejection(result), item.message_id))
            else:
                event = dataclasses.replace(result, message_id=item.message_id)
                pending.append(_Pending(message, event))
        return pending, dead

    def _apply_request(self, message: Message, report: BatchReport) -> DeadLetter | None:
        """Apply one consent-signal or DSR record through its use case; a record the use case
        refuses (a 4xx of the API) becomes a dead letter."""
        topic, partition, offset = _coordinates(message)
        kind = self.config.kind(topic)
        header_id = _header(message, MESSAGE_ID_HEADERS)
        try:
            document = load_object(message.value())
            message_id = message_id_of(document, header_id) or f"kafka:{topic}:{partition}:{offset}"
        except EnvelopeError as exc:
            return self._letter(message, exc.reason, (f"{exc.pointer}: {exc}",), header_id)
        try:
            if kind is TopicKind.CONSENT:
                duplicate = self._record_consent(message, document, message_id)
            else:
                duplicate = self._submit_dsr(document)
        except (ValidationError, InputLimitError, BatchValidationError) as exc:
            return self._letter(message, *_rejection(exc), message_id)
        except (StoreUnavailableError, WorkerStoppedError):
            # Not the record's fault: nothing is committed and the batch is redelivered.
            raise
        except IdGraphError as exc:
            # The API's 4xx (a 409 request-id reuse, several persons, ...): the class name only,
            # since a message may quote input.
            return self._letter(message, exc.code, (f"#: {type(exc).__name__}",), message_id)
        if duplicate:
            report.duplicates += 1
        else:
            report.applied += 1
        self._metrics.records.labels(topic, "duplicate" if duplicate else "applied").inc()
        return None

    def _record_consent(self, message: Message, document: dict[str, Any], message_id: str) -> bool:
        """``POST /v1/consent`` from a record; True when its message id was applied before."""
        gpc_field = document.pop("gpc", False)
        if not isinstance(gpc_field, bool):
            raise BatchValidationError(
                [InvalidFieldError("not_boolean", "gpc must be true or false", "#/gpc")]
            )
        gpc = gpc_field or (_header(message, GPC_HEADERS) or "").strip() == "1"
        document.setdefault("source", self.config.source)
        body = _validated(ConsentRequest, document)
        # The proof of direct decisions and GPC is the digest of the record value, as the
        # request body is for the API.
        submission = ConsentSubmission.from_request(
            body, message.value() or b"", gpc=gpc, message_id=message_id
        )
        result = self._retrying(
            lambda: self._ingest.record_consent(submission, actor=self.config.actor)
        )
        if isinstance(result, ConsentAuditError):
            return result.outcomes[0].outcome is Outcome.DUPLICATE
        return result.outcome.outcome is Outcome.DUPLICATE

    def _submit_dsr(self, document: dict[str, Any]) -> bool:
        """``POST /v1/dsr`` from a record; True when the request id was accepted before with
        the same content (an idempotent replay)."""
        if self._dsr is None:  # pragma: no cover - refused by the constructor
            raise WorkerStoppedError("DSR topics need the DSR service")
        dsr = self._dsr
        submission = _validated(DsrCreate, document).submission()
        caller = DsrCaller(self.config.actor, self.config.dsr_owner)
        submitted = self._retrying(lambda: dsr.submit(submission, caller))
        if isinstance(submitted, ConsentAuditError):  # pragma: no cover - DSRs record no consent
            return False
        return not submitted.created

    def _letter(
        self, message: Message, reason: str, problems: tuple[str, ...], message_id: str | None
    ) -> DeadLetter:
        digest = None
        if message_id is not None:
            digest = self._digest(self.config.source, message_id).hex()
        topic, partition, offset = _coordinates(message)
        return DeadLetter(
            topic,
            partition,
            offset,
            reason,
            problems,
            self.config.group_id,
            digest,
        )

    def _apply(self, pending: list[_Pending], report: BatchReport) -> list[DeadLetter]:
        """One transaction for the batch; a batch the store refuses as a whole is applied
        record by record so that only the offending record is dead-lettered."""
        try:
            outcomes = self._commit_events([p.event for p in pending])
        except (StoreUnavailableError, WorkerStoppedError):
            # Not the record's fault: nothing is committed and the batch is redelivered.
            raise
        except IdGraphError as exc:
            if len(pending) == 1:
                message = pending[0].message
                problem = (f"#: {type(exc).__name__}",)
                return [self._letter(message, exc.code, problem, pending[0].event.message_id)]
            log.warning("stream_batch_split", records=len(pending), error=type(exc).__name__)
            dead: list[DeadLetter] = []
            for item in pending:
                dead += self._apply([item], report)
            return dead
        for outcome in outcomes:
            report.outcomes.append(outcome)
            if outcome.outcome is Outcome.DUPLICATE:
                report.duplicates += 1
            else:
                report.applied += 1
        for item, outcome in zip(pending, outcomes, strict=True):
            result = "duplicate" if outcome.outcome is Outcome.DUPLICATE else "applied"
            self._metrics.records.labels(item.message.topic(), result).inc()
        return []

    def _commit_events(self, events: list[IdentityEvent]) -> list[EventOutcome]:
        """The graph commit, retried with backoff while the store is unavailable."""
        result = self._retrying(lambda: self._ingest.commit(events, self.config.actor))
        return list(result.outcomes) if isinstance(result, ConsentAuditError) else result

    def _retrying(self, call: Callable[[], _T]) -> _T | ConsentAuditError:
        """``call``, retried with backoff while the store is unavailable.

        A :class:`ConsentAuditError` means the graph part is committed and only the consent
        audit entries are missing: re-applying would be a message-id duplicate and would never
        write them, so the entries themselves are retried (same backoff) and the error, which
        carries the committed outcomes, is returned once they are appended. The batch's offsets
        are committed only after that; a worker that gives up exits without committing.
        """
        deadline = time.monotonic() + self.config.max_retry_s
        backoff = _Backoff(self, deadline)
        while True:
            try:
                return call()
            except ConsentAuditError as exc:
                log.warning("stream_consent_audit_retrying", entries=len(exc.drafts))
                self._append_audit(exc, backoff)
                return exc
            except StoreUnavailableError:
                backoff.wait("the store")

    def _append_audit(self, error: ConsentAuditError, backoff: _Backoff) -> None:
        while True:
            try:
                self._ingest.retry_consent_audit(error)
            except StoreUnavailableError:
                backoff.wait("the audit log")
            else:
                log.info("stream_consent_audit_appended", entries=len(error.drafts))
                return

    def dead_letter(self, dead: Sequence[DeadLetter], report: BatchReport) -> None:
        """Produce ``dead`` to the dead-letter topic and wait for the broker's acknowledgement
        (raises :class:`WorkerStoppedError` if it does not come)."""
        if not dead:
            return
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.name())

        now = self._clock()
        for letter in dead:
            self._producer.produce(
                self.config.dead_letter_topic,
                value=letter.to_json(now),
                key=letter.key,
                on_delivery=on_delivery,
            )
            self._metrics.dead_letters.labels(letter.topic, letter.reason).inc()
            self._metrics.records.labels(letter.topic, "dead_lettered").inc()
            log.info(
                "stream_dead_letter",
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                reason=letter.reason,
            )
        remaining = self._producer.flush(30)
        if failures or remaining:
            # Not committed: the batch is redelivered and the applied part is a duplicate.
            raise WorkerStoppedError(
                f"{len(failures) + remaining} dead letters were not acknowledged by the broker"
            )
        report.dead_letters += len(dead)

    def _commit(self, last: Mapping[tuple[str, int], int]) -> None:
        """Step 4: commit the batch's offsets, **without waiting for the broker's answer**.

        The graph commit is durable already, and a record whose offset commit is lost (a crash,
        a refused commit) is only redelivered, which its message id makes a no-op. So nothing
        needs the answer before the next batch, and waiting for it cost a broker round trip per
        batch in which the worker did nothing (7-37 ms measured, the whole of the worker's
        per-batch idle time apart from the graph's fsync). The answer arrives in
        :meth:`_on_commit` during the next poll; :meth:`run` waits for the last one before it
        leaves the group.
        """
        if not last or self._consumer is None:
            return
        offsets = [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
        self._commits_in_flight.append(time.perf_counter())
        self._last_offsets = offsets
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # refused before it was sent (no coordinator yet)
            self._commits_in_flight.pop()
            log.warning("stream_offset_commit_refused", error=exc.args[0].name())

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The broker's answer to an offset commit (librdkafka calls it during a poll)."""
        if self._commits_in_flight:
            started = self._commits_in_flight.popleft()
            self._metrics.offset_commit_seconds.observe(time.perf_counter() - started)
        refused = err or next((p.error for p in partitions if p.error is not None), None)
        if refused is not None:
            # The group moved on (a rebalance): the new owner re-reads from the last committed
            # offset, and the message ids make that re-read a no-op.
            log.warning("stream_offset_commit_refused", error=refused.name())

    def _confirm_commits(self) -> None:
        """If a commit is unanswered, commit the last batch's offsets again (what the last one
        sent carries) and wait for the answer: a worker that leaves has them confirmed."""
        if not self._commits_in_flight or self._consumer is None:
            return
        started = time.perf_counter()
        try:
            self._consumer.commit(offsets=self._last_offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("stream_offset_commit_refused", error=exc.args[0].name())
        finally:
            self._metrics.offset_commit_seconds.observe(time.perf_counter() - started)
            self._commits_in_flight.clear()

    # -- rebalances and housekeeping --------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(p.topic, p.partition) for p in partitions}
        log.info("stream_partitions_assigned", partitions=sorted(self._assigned))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called inside consume(): the batch in flight is finished and its offsets confirmed
        # while the partitions are still this member's (see the module docstring).
        self.finish_in_flight()
        self._confirm_commits()
        for p in partitions:
            self._metrics.forget_partition(p.topic, p.partition)
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        log.info("stream_partitions_revoked", partitions=len(partitions))

    @property
    def publishes(self) -> bool:
        """Whether this member relays the outbox: the owner of the first topic's partition 0,
        so that one member of the group publishes at a time (a rebalance hands it over)."""
        first = self.config.subscriptions[0]
        return self._relay is not None and (first, 0) in self._assigned

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if (
            self._audience_changes is not None
            and self.publishes
            and now - self._last_audiences >= self.config.audience_interval_s
        ):
            self._last_audiences = now
            try:
                self._audience_changes()
            except StoreUnavailableError as exc:
                # The next pass computes the same changes: nothing is lost by waiting.
                log.warning("audience_changes_unavailable", error=type(exc).__name__)
        if self._relay is not None and self.publishes:
            self._relay.run_once()
        if now - self._last_lag >= self.config.lag_interval_s:
            self._last_lag = now
            self._update_lag()
        if now - self._last_forget >= 3600 and self.publishes:
            self._last_forget = now
            before = self._clock() - self.config.dedup_window
            forgotten = self._store.write(lambda tx: tx.forget_messages(before))
            if forgotten:
                log.info("stream_message_ids_forgotten", count=forgotten)

    def _update_lag(self) -> None:
        lags = self._lags(timeout_s=1.0)
        for (topic, partition), lag in (lags or {}).items():
            self._metrics.lag.labels(topic, str(partition)).set(lag)

    def _caught_up(self) -> bool | None:
        """Whether every assigned partition is read to its end (its high watermark now);
        ``None`` when the broker did not answer.

        The idle exit asks this instead of trusting a quiet spell alone: right after an
        assignment the first fetch can take seconds on a loaded broker, and a catch-up run that
        left then would exit 0 with its backlog unread."""
        lags = self._lags(timeout_s=10.0)
        return None if lags is None else not any(lags.values())

    def _lags(self, timeout_s: float) -> dict[tuple[str, int], int] | None:
        """Records behind the high watermark per assigned partition (``None``: unknown)."""
        consumer = self._consumer
        if consumer is None:
            return None
        if not self._assigned:
            return {}
        lags: dict[tuple[str, int], int] = {}
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in sorted(self._assigned)])
            for tp in positions:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                # Nothing fetched yet: the committed offset, or the start (auto.offset.reset).
                position = (
                    tp.offset if tp.offset >= 0 else _committed_or(consumer, tp, low, timeout_s)
                )
                lags[(tp.topic, tp.partition)] = max(0, high - position)
        except KafkaException as exc:
            log.warning("stream_lag_unavailable", error=exc.args[0].name())
            return None
        return lags


def _committed_or(consumer: Consumer, tp: TopicPartition, default: int, timeout_s: float) -> int:
    (committed,) = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=timeout_s)
    return committed.offset if committed.offset >= 0 else default


class _Backoff:
    """Exponential backoff (0.5 s doubling to 30 s) until a deadline, then WorkerStoppedError."""

    def __init__(self, worker: StreamWorker, deadline: float) -> None:
        self._worker = worker
        self._deadline = deadline
        self._delay = 0.5

    def wait(self, what: str) -> None:
        worker = self._worker
        if time.monotonic() + self._delay > self._deadline:
            raise WorkerStoppedError(
                f"{what} stayed unavailable for {worker.config.max_retry_s:.0f}s; "
                "the batch's offsets are not committed and it will be redelivered"
            ) from None
        worker._metrics.retries.inc()
        log.warning("stream_store_unavailable_retrying", waiting_for=what, delay_s=self._delay)
        worker._sleep(self._delay)
        self._delay = min(self._delay * 2, 30.0)


def _validated(model: type[_M], document: dict[str, Any]) -> _M:
    return model.model_validate(document)


def _rejection(
    exc: ValidationError | InputLimitError | BatchValidationError,
) -> tuple[str, tuple[str, ...]]:
    """The dead-letter reason and problems of a refused record (pointers and messages only)."""
    if isinstance(exc, ValidationError):
        # msg and loc only: pydantic's `input` would echo the raw value into the letter.
        return "invalid-request", tuple(
            f"{pointer_from_location(e['loc'])}: {e['msg']}" for e in exc.errors()[:20]
        )
    if isinstance(exc, InputLimitError):
        return exc.code, (f"{exc.field}: {exc.message}",)
    return exc.code, tuple(f"{e.field}: {e.message}" for e in exc.errors)

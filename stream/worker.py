"""The stream ingest worker: Kafka records in, the ingest use case, offsets out.

One poll is one batch and one engine transaction, through the same use case as the API
(:class:`services.ingest.IngestService`: validation, normalization, PII scan, one transaction,
consent audit). The order of every batch is what makes it safe:

1. decode and validate each record (``IngestService.event``); a record that cannot be applied
   becomes a **dead letter** (by reference, :mod:`stream.dead_letters`) and its partition keeps
   flowing;
2. apply the valid ones in **one graph transaction** (``IngestService.commit``), each with its
   message id: the sender's ``message_id``/``messageId`` if it has one, else the record's own
   coordinates (``kafka:<topic>:<partition>:<offset>``). The id's keyed digest is recorded in
   the same transaction, so a redelivered record is a no-op (``duplicate``);
3. wait until the dead letters are acknowledged by the broker;
4. **commit the offsets** (synchronously) only now. A crash (SIGKILL) anywhere before this step
   redelivers the batch and step 2 skips what was applied: nothing lost, nothing applied twice.

**Backpressure**: the worker holds one batch at a time (``--batch-size``) and does not poll while
it applies it; librdkafka's prefetch is bounded (``queued.max.messages.kbytes``). When the store
is unavailable the batch is retried with exponential backoff up to ``--max-retry-seconds``, then
the worker exits non-zero without committing (its supervisor restarts it; the batch is redelivered).

**Rebalances**: partitions are only reassigned inside ``consume()``, and every batch is committed
before the next ``consume()``, so a revoked partition has nothing in flight. A commit refused
because the group moved on (the batch took longer than ``max.poll.interval.ms``) only means the
new owner reads those records again, and step 2 makes that harmless.

**SIGTERM / SIGINT**: the current batch is finished and committed, then the consumer leaves the
group (``close()``), so its partitions move at once instead of after the session timeout.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from identity.errors import (
    BatchValidationError,
    IdGraphError,
    InputLimitError,
    StoreUnavailableError,
)
from identity.model import EventOutcome, IdentityEvent, Outcome
from identity.store.port import GraphStore
from privacy.consent.recording import ConsentAuditError
from services.inputs import IdentifyRequest, pointer_from_location
from stream.dead_letters import DeadLetter
from stream.envelopes import EnvelopeError, parse
from stream.metrics import StreamMetrics
from stream.relay import OutboxRelay

log = structlog.get_logger("idgraph.stream")

MESSAGE_ID_HEADERS = ("message_id", "messageId", "idgraph-message-id")


class EventIngest(Protocol):
    """The part of the ingest use case the worker calls (``services.ingest.IngestService``)."""

    def event(self, request: IdentifyRequest, pointer: str = "#") -> IdentityEvent:
        """Validate, normalize and PII-scan one request. Writes nothing."""
        ...

    def commit(self, events: Sequence[IdentityEvent], actor: str) -> list[EventOutcome]:
        """Apply validated events in one transaction, then audit their consent records."""
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
    source: str = "kafka"
    batch_size: int = 500
    poll_timeout_s: float = 1.0
    max_retry_s: float = 300.0
    dedup_window: timedelta = timedelta(days=7)
    lag_interval_s: float = 5.0
    client_config: Mapping[str, str] = field(default_factory=dict)

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
        publish_topics: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._ingest = ingest
        self._store = store
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
        self._assigned: set[tuple[str, int]] = set()
        self._last_lag = 0.0
        self._last_forget = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and leave (signal-safe)."""
        self._stop.set()

    def run(
        self, max_batches: int | None = None, idle_exit_s: float | None = None
    ) -> dict[str, float]:
        """Consume until :meth:`stop` (or ``max_batches`` batches, or ``idle_exit_s`` without
        records: tests and one-shot catch-up runs), then leave the group. Returns the totals
        and the seconds from the first record polled to the last batch committed."""
        consumer = Consumer(self.config.consumer_config())
        self._consumer = consumer
        consumer.subscribe(
            list(self.config.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        totals = BatchReport()
        batches = 0
        first: float | None = None
        last = idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.config.batch_size, self.config.poll_timeout_s)
                if messages:
                    first = first or time.monotonic()
                    report = self.process(messages)
                    totals.records += report.records
                    totals.applied += report.applied
                    totals.duplicates += report.duplicates
                    totals.dead_letters += report.dead_letters
                    batches += 1
                    last = idle_since = time.monotonic()
                self._housekeeping()
                if not self._assigned:
                    # Waiting for partitions (joining, or a rebalance) is not being idle.
                    idle_since = time.monotonic()
                if max_batches is not None and batches >= max_batches:
                    break
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
        finally:
            # Leaves the group at once (its partitions move now, not after the session timeout);
            # every batch was committed already, so there is nothing to commit here.
            consumer.close()
            self._producer.flush(10)
            self._consumer = None
        return {
            "records": totals.records,
            "applied": totals.applied,
            "duplicates": totals.duplicates,
            "dead_letters": totals.dead_letters,
            "batches": batches,
            "seconds": round(last - first, 3) if first is not None else 0.0,
        }

    # -- one batch -------------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> BatchReport:
        """Apply one polled batch and commit its offsets (steps 1-4 of the module docstring)."""
        report = BatchReport(records=len(messages))
        self._metrics.batch_size.observe(len(messages))
        pending: list[_Pending] = []
        dead: list[DeadLetter] = []
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("stream_record_error", error=error.name())
                continue
            topic, partition, offset = _coordinates(message)
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
            outcome = self._decode(message)
            if isinstance(outcome, DeadLetter):
                dead.append(outcome)
            else:
                pending.append(_Pending(message, outcome))
        if pending:
            dead += self._apply(pending, report)
        self._dead_letter(dead, report)
        self._commit(last)
        return report

    def _decode(self, message: Message) -> IdentityEvent | DeadLetter:
        topic, partition, offset = _coordinates(message)
        header_id = _header(message, MESSAGE_ID_HEADERS)
        try:
            envelope = parse(message.value(), self.config.source, header_id)
        except EnvelopeError as exc:
            return self._letter(message, exc.reason, (f"{exc.pointer}: {exc}",), header_id)
        message_id = envelope.message_id or f"kafka:{topic}:{partition}:{offset}"
        try:
            request = IdentifyRequest.model_validate(envelope.request)
        except ValidationError as exc:
            # msg and loc only: pydantic's `input` would echo the raw value into the letter.
            problems = tuple(
                f"{pointer_from_location(e['loc'])}: {e['msg']}" for e in exc.errors()[:20]
            )
            return self._letter(message, "invalid-request", problems, message_id)
        try:
            event = self._ingest.event(request)
        except InputLimitError as exc:
            return self._letter(message, exc.code, (f"{exc.field}: {exc.message}",), message_id)
        except BatchValidationError as exc:
            problems = tuple(f"{e.field}: {e.message}" for e in exc.errors)
            return self._letter(message, exc.code, problems, message_id)
        return dataclasses.replace(event, message_id=message_id)

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
        except StoreUnavailableError:
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
        delay = 0.5
        deadline = time.monotonic() + self.config.max_retry_s
        while True:
            try:
                return self._ingest.commit(events, self.config.actor)
            except ConsentAuditError:
                # The graph part is committed (the audit append came after it and failed; the
                # use case logged what the entries held). Re-applying would be a duplicate, so
                # the batch counts as applied and its offsets are committed.
                log.exception("stream_consent_audit_missing", records=len(events))
                return [_committed_without_outcome() for _ in events]
            except StoreUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise WorkerStoppedError(
                        f"the store stayed unavailable for {self.config.max_retry_s:.0f}s; "
                        "the batch is not committed and will be redelivered"
                    ) from None
                self._metrics.retries.inc()
                log.warning("stream_store_unavailable_retrying", delay_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, 30.0)

    def _dead_letter(self, dead: list[DeadLetter], report: BatchReport) -> None:
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
        if not last or self._consumer is None:
            return
        offsets = [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
        started = time.perf_counter()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The group moved on (a rebalance): the new owner re-reads from the last committed
            # offset, and the message ids make that re-read a no-op.
            log.warning("stream_offset_commit_refused", error=exc.args[0].name())
        finally:
            self._metrics.offset_commit_seconds.observe(time.perf_counter() - started)

    # -- rebalances and housekeeping --------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(p.topic, p.partition) for p in partitions}
        log.info("stream_partitions_assigned", partitions=sorted(self._assigned))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing is in flight here (see the module docstring): only the gauges change owner.
        for p in partitions:
            self._metrics.forget_partition(p.topic, p.partition)
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        log.info("stream_partitions_revoked", partitions=len(partitions))

    @property
    def publishes(self) -> bool:
        """Whether this member relays the outbox: the owner of the first topic's partition 0,
        so that one member of the group publishes at a time (a rebalance hands it over)."""
        return self._relay is not None and (self.config.topics[0], 0) in self._assigned

    def _housekeeping(self) -> None:
        if self._relay is not None and self.publishes:
            self._relay.run_once()
        now = time.monotonic()
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
        consumer = self._consumer
        if consumer is None or not self._assigned:
            return
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in sorted(self._assigned)])
            for tp in positions:
                low, high = consumer.get_watermark_offsets(tp, timeout=1.0)
                # Nothing fetched yet: the committed offset, or the start (auto.offset.reset).
                position = tp.offset if tp.offset >= 0 else _committed_or(consumer, tp, low)
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
        except KafkaException as exc:
            log.warning("stream_lag_unavailable", error=exc.args[0].name())


def _committed_or(consumer: Consumer, tp: TopicPartition, default: int) -> int:
    (committed,) = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=1.0)
    return committed.offset if committed.offset >= 0 else default


def _committed_without_outcome() -> EventOutcome:
    """An outcome for an event whose batch committed but whose result was lost to an error."""
    return EventOutcome(Outcome.UNCHANGED, None, (), 0, ())

"""The outbox relay: outbound events from the graph's outbox to Kafka, at least once.

Each round reads a page of ready events (oldest first; ``person.erased`` only once its erasure
has completed), produces each to its kind's topic keyed by the person id (one person's events
stay in order on one partition), waits for the broker's acknowledgement (``acks=all``,
idempotent producer) and only then deletes the delivered events from the outbox. A crash
between the acknowledgement and the delete publishes those events again on the next round:
at least once, so downstream consumers deduplicate by ``event_id`` (every document has one,
and the record carries it in the ``event_id`` header too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import structlog
from confluent_kafka import KafkaError, Message, Producer

from identity.model import OutboundEvent
from identity.outbound import SCHEMA_VERSIONS, schema_id
from identity.store.port import GraphStore
from stream.metrics import StreamMetrics

log = structlog.get_logger("idgraph.stream.relay")

DEFAULT_PAGE: Final = 500
_DeliveryCallback = Callable[[KafkaError | None, Message], None]


class OutboxRelay:
    """Publishes the graph's outbound events; see the module docstring."""

    def __init__(
        self,
        store: GraphStore,
        producer: Producer,
        topics: Mapping[str, str],
        metrics: StreamMetrics,
        *,
        page_size: int = DEFAULT_PAGE,
        flush_timeout_s: float = 30.0,
    ) -> None:
        unknown = set(SCHEMA_VERSIONS) - set(topics)
        if unknown:
            raise ValueError(f"no topic configured for event kinds {sorted(unknown)}")
        self._store = store
        self._producer = producer
        self._topics = dict(topics)
        self._metrics = metrics
        self._page = page_size
        self._flush_timeout = flush_timeout_s

    def run_once(self) -> int:
        """Publish one page; returns how many events were delivered and removed."""
        page = self._store.read(lambda tx: tx.outbound_page(self._page))
        if not page:
            return 0
        delivered: list[OutboundEvent] = []
        failed = 0

        def report(event: OutboundEvent) -> _DeliveryCallback:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                nonlocal failed
                if err is None:
                    delivered.append(event)
                else:
                    failed += 1
                    log.warning("outbox_delivery_failed", kind=event.kind, error=err.name())

            return on_delivery

        for event in page:
            self._produce(event, report(event))
        remaining = self._producer.flush(self._flush_timeout)
        if delivered:
            self._store.write(lambda tx: tx.delete_outbound([e.event_id for e in delivered]))
            for event in delivered:
                self._metrics.published.labels(event.kind).inc()
        if failed or remaining:
            self._metrics.publish_failures.inc(failed + remaining)
        return len(delivered)

    def drain(self, max_rounds: int = 1000) -> int:
        """Publish until the outbox has nothing ready (or a round delivers nothing)."""
        total = 0
        for _ in range(max_rounds):
            published = self.run_once()
            total += published
            if published == 0:
                break
        return total

    def _produce(self, event: OutboundEvent, on_delivery: _DeliveryCallback) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("event_id", event.event_id),
            ("schema", schema_id(event.kind)),
        ]
        while True:
            try:
                self._producer.produce(
                    self._topics[event.kind],
                    value=event.payload.encode(),
                    key=event.person_id.encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
            except BufferError:
                # The producer's local queue is full: let it send before queueing more.
                self._producer.poll(0.1)
            else:
                return

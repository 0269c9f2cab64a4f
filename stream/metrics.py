"""The consumer's Prometheus metrics, served on its own ``/metrics`` (``--metrics-port``).

Label values come from fixed sets or from the worker's own configuration (topic names,
partitions): never from a record. No metric holds an identifier or a person id.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from identity.model import EventOutcome
from services.metrics import timed

_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StreamMetrics:
    """Counters, gauges and histograms of one consumer process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "idgraph_stream_records",
            "Records consumed, by topic and result (applied, duplicate, dead_lettered)",
            ["topic", "result"],
            registry=r,
        )
        self.outcomes = Counter(
            "idgraph_stream_outcomes",
            "Outcomes of applied events (created, linked, merged, unchanged, refused, duplicate)",
            ["outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "idgraph_stream_batch_size",
            "Records per poll (one engine transaction per poll)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "idgraph_stream_store_seconds",
            "Graph commit latency of one batch",
            buckets=_SECONDS,
            registry=r,
        )
        self.offset_commit_seconds = Histogram(
            "idgraph_stream_offset_commit_seconds",
            "Latency of an offset commit (sent after the graph commit, answered in a later poll)",
            buckets=_SECONDS,
            registry=r,
        )
        self.lag = Gauge(
            "idgraph_stream_consumer_lag",
            "Records between this consumer's position and the partition's end",
            ["topic", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "idgraph_stream_dead_letters",
            "Records sent to the dead-letter topic, by source topic and reason code",
            ["topic", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "idgraph_stream_batch_retries",
            "Batches retried after the store was unavailable (backpressure: partitions paused)",
            registry=r,
        )
        self.published = Counter(
            "idgraph_outbox_published",
            "Outbound events published to Kafka and removed from the outbox, by kind",
            ["kind"],
            registry=r,
        )
        self.publish_failures = Counter(
            "idgraph_outbox_publish_failures",
            "Outbound events whose delivery failed (kept in the outbox, retried)",
            registry=r,
        )

    # -- the use cases' metrics port (services.metrics.UseCaseMetrics) --------------------------

    def time_store(self, operation: object) -> AbstractContextManager[None]:
        """Observe the graph commit of one batch."""
        return timed(self.store_seconds.observe)

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes of one batch."""
        for outcome in outcomes:
            self.outcomes.labels(outcome.outcome.value).inc()

    def record_opened_batches(self, source: object, count: int) -> None:
        """Nothing: a stream consumer applies no ingest journal (its batches are synchronous)."""

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition this consumer no longer owns."""
        with suppress(KeyError):
            self.lag.remove(topic, str(partition))

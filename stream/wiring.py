"""Wiring of the stream worker: the one bootstrap's collaborators, a metrics server, topics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client import start_http_server

from stream.metrics import StreamMetrics
from stream.worker import StreamWorker, WorkerConfig


@contextmanager
def build_stream(
    config: WorkerConfig,
    dedup_days: float | None,
    metrics: StreamMetrics,
    publish_topics: Mapping[str, str] | None,
) -> Iterator[StreamWorker]:
    """A worker on the store, keys and policies the IDGRAPH_* settings name (as the API's).

    ``dedup_days`` (``--dedup-days``) overrides the message-id window of the settings; the
    engine forgets ids by that one window, so the worker's own sweep uses it too.
    """
    from bootstrap.container import build_container
    from bootstrap.settings import Settings

    settings = Settings() if dedup_days is None else Settings(message_id_window_days=dedup_days)
    window = timedelta(days=settings.message_id_window_days)
    container = build_container(settings)
    try:
        yield StreamWorker(
            dataclasses.replace(config, dedup_window=window),
            container.ingest.with_metrics(metrics),
            container.store,
            container.engine.message_digest,
            metrics,
            dsr=container.dsr,
            publish_topics=publish_topics,
            audience_changes=(
                container.audience_changes.run_once
                if config.audience_interval_s > 0 and container.settings.outbound_events
                else None
            ),
        )
    finally:
        container.close()


def serve_metrics(metrics: StreamMetrics, host: str, port: int) -> None:
    """Serve ``/metrics`` of ``metrics`` on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=metrics.registry)


def create_missing_topics(
    config: WorkerConfig, topics: Sequence[str], partitions: int, replication_factor: int
) -> list[str]:
    """Create those of ``topics`` the cluster lacks; returns the names created."""
    admin = AdminClient({"bootstrap.servers": config.bootstrap_servers, **config.client_config})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t, partitions, replication_factor) for t in wanted], operation_timeout=30
    )
    for future in futures.values():
        future.result(timeout=60)
    return wanted

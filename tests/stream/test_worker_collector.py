"""The stream worker applies a batch with automatic garbage collection off and collects the young
generation after it, as the bulk path and the ingest appliers do (``collector_paused``).

No broker is needed: the records are confluent-kafka ``Message`` objects made in memory and go
through ``StreamWorker.process`` on the real container (its offsets are not committed: no
consumer; no record is dead-lettered, so nothing is produced).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.errors import BatchValidationError, InputLimitError
from identity.model import EventOutcome, IdentityEvent
from privacy.consent.recording import ConsentAuditError
from services.ingest import ConsentResult, ConsentSubmission
from services.inputs import IdentifyInput, IdentifyRequest
from stream.metrics import StreamMetrics
from stream.worker import StreamWorker, WorkerConfig
from tests.conftest import POLICY_DIR


class _CollectorWatchingIngest:
    """The real ingest use case, noting whether automatic collection is on at each call."""

    def __init__(self, container: Container, metrics: StreamMetrics) -> None:
        self._inner = container.ingest.with_metrics(metrics)
        self.collector_on: list[tuple[str, bool]] = []

    def events(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        pointers: Sequence[str] | None = None,
    ) -> Sequence[IdentityEvent | InputLimitError | BatchValidationError]:
        self.collector_on.append(("events", gc.isenabled()))
        return self._inner.events(requests, pointers)

    def commit(self, events: Sequence[IdentityEvent], actor: str) -> list[EventOutcome]:
        self.collector_on.append(("commit", gc.isenabled()))
        return self._inner.commit(events, actor)

    def record_consent(self, submission: ConsentSubmission, *, actor: str) -> ConsentResult:
        return self._inner.record_consent(submission, actor=actor)

    def retry_consent_audit(self, error: ConsentAuditError) -> None:
        self._inner.retry_consent_audit(error)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    built = build_container(Settings(env="test", data_dir=tmp_path / "g", policy_dir=POLICY_DIR))
    yield built
    built.close()


def _record(email: str, message_id: str) -> bytes:
    body: dict[str, Any] = {
        "identifiers": [{"type": "email", "value": email}],
        "source": "web",
        "timestamp": "2026-03-01T12:00:00+00:00",
        "message_id": message_id,
    }
    return json.dumps(body).encode()


def test_a_batch_is_applied_with_the_collector_off_and_the_young_generation_collected_after(
    container: Container,
) -> None:
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers="127.0.0.1:9",  # never contacted: no consumer, no dead letter
        group_id="g-collector",
        topics=("ingest",),
        dead_letter_topic="dlq",
        source="sdk",
        client_config={"log_level": "0"},
    )
    ingest = _CollectorWatchingIngest(container, metrics)
    worker = StreamWorker(config, ingest, container.store, container.engine.message_digest, metrics)
    messages = [
        Message(topic="ingest", partition=0, offset=n, value=_record(f"p{n}@gc.example", f"m-{n}"))
        for n in range(3)
    ]
    collected: list[int] = []

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(on_collection)
    try:
        report = worker.process(messages)
    finally:
        gc.callbacks.remove(on_collection)

    assert report.applied == 3
    # Off for the whole batch: validation and scan, and the graph transaction.
    assert ingest.collector_on == [("events", False), ("commit", False)]
    # Back on once the batch is done, after one collection of the young generation.
    assert gc.isenabled()
    assert collected[-1:] == [0]

"""One poll is one validation and PII-scan batch: the stream worker hands the ingest use case every
decodable record of a poll in one ``IngestService.events`` call (so the NER model runs once per
poll), and decides each record exactly as it did record by record.

No broker is needed: the records are confluent-kafka ``Message`` objects made in memory and go
through ``StreamWorker.apply`` (steps 1-2 of the worker) on the real container (SQLite store,
policy engine, scanner and vault on a temp dir). ``tests/stream/test_consume_kafka.py`` runs the
same worker on a live broker (``make test-kafka``).
"""

from __future__ import annotations

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
from stream.worker import BatchReport, StreamWorker, WorkerConfig
from tests.conftest import POLICY_DIR

TOPIC = "ingest"
AT = "2026-03-01T12:00:00+00:00"


class _CountingIngest:
    """The real ingest use case, counting the requests of each ``events`` call."""

    def __init__(self, container: Container, metrics: StreamMetrics) -> None:
        self._inner = container.ingest.with_metrics(metrics)
        self.calls: list[int] = []

    def events(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        pointers: Sequence[str] | None = None,
    ) -> Sequence[IdentityEvent | InputLimitError | BatchValidationError]:
        self.calls.append(len(requests))
        return self._inner.events(requests, pointers)

    def commit(self, events: Sequence[IdentityEvent], actor: str) -> list[EventOutcome]:
        return self._inner.commit(events, actor)

    def record_consent(self, submission: ConsentSubmission, *, actor: str) -> ConsentResult:
        return self._inner.record_consent(submission, actor=actor)

    def retry_consent_audit(self, error: ConsentAuditError) -> None:
        self._inner.retry_consent_audit(error)


def _identify(email: str, message_id: str, traits: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "identifiers": [{"type": "email", "value": email}],
        "source": "web",
        "timestamp": AT,
        "message_id": message_id,
    }
    if traits is not None:
        body["traits"] = traits
    return json.dumps(body).encode()


RECORDS = [
    _identify("ann@batch.example", "m-0", {"favourite_category": "running shoes"}),
    b'{"identifiers": [{"type": "email"',  # not JSON
    _identify("bo@batch.example", "m-2", {"age_band": "+4915123456789"}),  # rejected PII
    _identify("not-an-email", "m-3", {"city": "Lyon"}),  # invalid identifier
    _identify("cy@batch.example", "m-4", {"favourite_category": "ring +49 151 23456789"}),
    _identify("ann@batch.example", "m-0", {"favourite_category": "running shoes"}),  # same id
    _identify("dee@batch.example", "m-6", {"city": "Berlin", "interests": ["garden", "Berlin"]}),
    json.dumps({"identifiers": [{"type": "shoe_size", "value": "44"}]}).encode(),  # bad type
    _identify("eve@batch.example", "m-8", {"visit_count": "many"}),  # wrong value type
]


def _messages() -> list[Message]:
    return [
        Message(topic=TOPIC, partition=0, offset=offset, value=value)
        for offset, value in enumerate(RECORDS)
    ]


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[tuple[Container, Container]]:
    built = [
        build_container(Settings(env="test", data_dir=tmp_path / name, policy_dir=POLICY_DIR))
        for name in ("batched", "one-by-one")
    ]
    yield built[0], built[1]
    for container in built:
        container.close()


def _worker(container: Container) -> tuple[StreamWorker, _CountingIngest]:
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers="127.0.0.1:9",  # never contacted: apply() neither polls nor produces
        group_id="g-batches",
        topics=(TOPIC,),
        dead_letter_topic="dlq",
        source="sdk",
        client_config={"log_level": "0"},
    )
    ingest = _CountingIngest(container, metrics)
    worker = StreamWorker(config, ingest, container.store, container.engine.message_digest, metrics)
    return worker, ingest


def _letters(container: Container, letters: Sequence[Any]) -> list[tuple[Any, ...]]:
    digests = {container.engine.message_digest("sdk", f"m-{i}").hex(): f"m-{i}" for i in range(10)}
    return [
        (letter.offset, letter.reason, letter.problems, digests.get(letter.message_digest))
        for letter in letters
    ]


def _totals(report: BatchReport) -> tuple[int, int, list[str]]:
    return report.applied, report.duplicates, [o.outcome.value for o in report.outcomes]


def test_a_poll_is_validated_and_scanned_in_one_call_and_decided_as_record_by_record(
    containers: tuple[Container, Container],
) -> None:
    batched_container, single_container = containers
    batched, batched_ingest = _worker(batched_container)
    report, dead, last = batched.apply(_messages())
    # Every record that decodes into a request (all but the one that is not JSON) reaches the
    # use case in one call.
    assert batched_ingest.calls == [8]

    single, single_ingest = _worker(single_container)
    single_reports, single_dead = [], []
    for message in _messages():
        one_report, one_dead, _ = single.apply([message])
        single_reports.append(one_report)
        single_dead.extend(one_dead)
    assert single_ingest.calls == [1] * 8

    assert _letters(batched_container, dead) == _letters(single_container, single_dead)
    assert [letter.offset for letter in dead] == [1, 2, 3, 7, 8]
    problems = [problem for letter in dead for problem in letter.problems]
    assert "not JSON" in problems[0]
    assert problems[1].startswith("#/traits/age_band: found PHONE_NUMBER")
    one_by_one = BatchReport()
    for one in single_reports:
        one_by_one.applied += one.applied
        one_by_one.duplicates += one.duplicates
        one_by_one.outcomes += one.outcomes
    assert _totals(report) == _totals(one_by_one)
    assert (report.applied, report.duplicates) == (3, 1)
    assert last == {(TOPIC, 0): len(RECORDS) - 1}

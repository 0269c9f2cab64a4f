"""Consent-signal and DSR topics on a real broker: the API's use cases, dead letters by reference.

The worker runs in-process on the real SQLite store of a temp data dir.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from bootstrap.container import Container
from privacy.auditing.log import PERSON_REF_INFO, SqliteAuditLog
from privacy.consent.recording import CONSENT_RECORDED
from privacy.dsr.model import DsrCaller
from services.event_validation import IngestLimits
from services.ingest import IngestService
from stream.metrics import StreamMetrics
from stream.replay import DeadLetterReplay
from stream.worker import StreamWorker, WorkerConfig, WorkerStoppedError
from tests.conftest import POLICY_DIR
from tests.support.containers import opened_container

from .conftest import TopicFactory
from .kafka_support import identify_record, produce, read_all

pytestmark = pytest.mark.kafka


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with opened_container(tmp_path / "data") as built:
        yield built


def _worker(
    container: Container,
    bootstrap: str,
    dlq: str,
    *,
    ingest: tuple[str, ...] = (),
    consent: tuple[str, ...] = (),
    dsr: tuple[str, ...] = (),
    group: str = "requests",
    source: str = "cmp",
) -> StreamWorker:
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers=bootstrap,
        group_id=f"{group}-{dlq}",
        topics=ingest,
        consent_topics=consent,
        dsr_topics=dsr,
        dsr_owner="privacy-team",
        dead_letter_topic=dlq,
        source=source,
        batch_size=50,
        poll_timeout_s=0.5,
    )
    return StreamWorker(
        config,
        container.ingest.with_metrics(metrics),
        container.store,
        container.engine.message_digest,
        metrics,
        dsr=container.dsr,
    )


def _consent(email: str, message_id: str, **signals: Any) -> bytes:
    return identify_record(email, message_id, timestamp="2026-03-01T10:00:00+00:00", **signals)


def _granted(container: Container, email: str, purpose: str) -> list[bool]:
    person = container.links.resolve(("email", email))
    assert person is not None
    records = container.store.read(lambda tx: tx.person_consents(person, [purpose]))
    return [r.granted for r in records]


def test_consent_signals_are_recorded_audited_and_deduplicated_when_read_from_a_topic(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("consent"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            _consent("ann@consent.example", "c-1", decisions={"marketing_email": True}),
            _consent("bo@consent.example", "c-2"),  # GPC from the header
            _consent("ann@consent.example", "c-1", decisions={"marketing_email": True}),
        ],
        headers=[None, [("sec-gpc", b"1")], None],
    )
    worker = _worker(container, kafka_bootstrap, dlq, consent=(topic,))
    summary = worker.run(idle_exit_s=3)
    assert (summary["applied"], summary["duplicates"], summary["dead_letters"]) == (2, 1, 0)
    assert _granted(container, "ann@consent.example", "marketing_email") == [True]
    # GPC opts out of the purposes mapped to it (ad_targeting among them).
    assert _granted(container, "bo@consent.example", "ad_targeting") == [False]
    entries = [e for e in container.audit.entries() if e.action == CONSENT_RECORDED]
    assert entries, "every stored consent record is audited"
    assert {e.actor for e in entries} == {f"stream:{worker.config.group_id}"}
    # Another group re-reading the topic (a redelivery) applies nothing twice.
    again = _worker(container, kafka_bootstrap, dlq, consent=(topic,), group="again")
    assert again.run(idle_exit_s=3)["duplicates"] == 3
    assert _granted(container, "ann@consent.example", "marketing_email") == [True]


def test_a_consent_signal_the_api_would_refuse_is_dead_lettered_without_its_values(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("consent"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            _consent("secret-cy@consent.example", "d-1", decisions={"no_such_purpose": True}),
            _consent("secret-not-an-email", "d-2", decisions={"analytics": True}),
            _consent("secret-dee@consent.example", "d-3", tcf="secret-not-a-tc-string"),
            _consent("ed@consent.example", "d-4", decisions={"analytics": False}),
        ],
    )
    summary = _worker(container, kafka_bootstrap, dlq, consent=(topic,)).run(idle_exit_s=3)
    assert (summary["applied"], summary["dead_letters"]) == (1, 3)
    assert _granted(container, "ed@consent.example", "analytics") == [False]
    assert container.links.resolve(("email", "secret-cy@consent.example")) is None
    letters = [doc for _, doc, _ in read_all(kafka_bootstrap, dlq, expect=3)]
    assert [d["source"]["offset"] for d in letters] == [0, 1, 2]
    assert all(d["reason"] == "invalid-batch" for d in letters)
    assert any(p.startswith("#/identifiers/0") for p in letters[1]["problems"])
    assert "secret" not in json.dumps(letters)


def _dsr(request_id: str, email: str, **extra: Any) -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "type": "erasure",
            "subject_identities": [{"type": "email", "value": email}],
            **extra,
        }
    ).encode()


def test_dsr_requests_are_accepted_once_and_invalid_ones_dead_lettered(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("dsr"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            _dsr("dsr-k-1", "fay@dsr.example"),
            _dsr("dsr-k-1", "fay@dsr.example"),  # the producer resent it: a replay
            _dsr("dsr-k-2", "secret-not-an-email"),
            _dsr("dsr-k-3", "gus@dsr.example", type="no-such-type"),
            _dsr("dsr-k-1", "secret-other@dsr.example"),  # the id reused for another subject
        ],
    )
    summary = _worker(container, kafka_bootstrap, dlq, dsr=(topic,)).run(idle_exit_s=3)
    assert (summary["applied"], summary["duplicates"], summary["dead_letters"]) == (1, 1, 3)
    owner = DsrCaller("test", "privacy-team")
    request = container.dsr.get("dsr-k-1", owner)
    assert request.type.value == "erasure"
    letters = [doc for _, doc, _ in read_all(kafka_bootstrap, dlq, expect=3)]
    assert [d["source"]["offset"] for d in letters] == [2, 3, 4]
    assert [d["reason"] for d in letters] == ["invalid-batch", "invalid-request", "dsr-conflict"]
    assert "secret" not in json.dumps(letters)


def test_dead_letters_are_replayed_by_reference_after_a_policy_fix(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policies)
    topic, dlq = new_topic("ingest"), new_topic("dlq")

    produce(
        kafka_bootstrap,
        topic,
        [
            identify_record("hal@replay.example", "r-1", traits={"loyalty_tier": "gold"}),
            identify_record("ida@replay.example", "r-2", traits={"shoe_size": "secret-44"}),
            identify_record("jo@replay.example", "r-3", traits={"city": "Leeds"}),
        ],
    )

    def ingest_worker(container: Container) -> StreamWorker:
        return _worker(
            container, kafka_bootstrap, dlq, ingest=(topic,), group="replay", source="sdk"
        )

    with opened_container(tmp_path / "data", policy_dir=policies) as before:
        summary = ingest_worker(before).run(idle_exit_s=3)
        assert (summary["applied"], summary["dead_letters"]) == (1, 2)
    # The fix: the facts policy learns the attribute the first record carried.
    categories = policies / "categories.yaml"
    categories.write_text(
        categories.read_text().replace(
            "attributes:\n",
            "attributes:\n  loyalty_tier: {category: behavioural, type: string, max_length: 20}\n",
            1,
        )
    )
    with opened_container(tmp_path / "data", policy_dir=policies) as after:
        report = DeadLetterReplay(ingest_worker(after)).run()
        assert (report.letters, report.applied, report.dead_letters, report.expired) == (2, 1, 1, 0)
        person = after.links.resolve(("email", "hal@replay.example"))
        assert person is not None
        # The record that still fails has a new letter, one attempt later, still by reference.
        letters = [doc for _, doc, _ in read_all(kafka_bootstrap, dlq, expect=3)]
        assert [(d["source"]["offset"], d["attempt"]) for d in letters] == [(0, 1), (1, 1), (1, 2)]
        assert "secret" not in json.dumps(letters)
        assert "replay.example" not in json.dumps(letters)
        # Resumable and bounded: a second run sees only the letter the first one wrote, and
        # re-applying an applied record is a no-op.
        again = DeadLetterReplay(ingest_worker(after)).run()
        assert (again.letters, again.applied, again.dead_letters) == (1, 0, 1)
        assert after.store.stats().persons == 2


def _audit_blocked_worker(
    container: Container,
    bootstrap: str,
    topic: str,
    dlq: str,
    max_retry_s: float,
    release_on_first_backoff: bool,
) -> tuple[StreamWorker, StreamMetrics, SqliteAuditLog, sqlite3.Connection]:
    """A consent worker whose audit log (the same file, a short busy timeout) is held locked
    by another writer: the append after the graph commit fails until the lock is released
    (optionally when the worker first backs off, i.e. after a failed append)."""
    settings = container.settings
    audit = SqliteAuditLog(
        settings.audit_db_path,
        busy_timeout_ms=100,
        person_ref_key=container.vault.reference_key(PERSON_REF_INFO),
    )
    ingest = IngestService(
        container.engine,
        container.facts,
        container.consent_signals,
        container.webhooks,
        audit,
        IngestLimits(default_region="GB"),
    )
    # Released from the worker's sleep, which its commit thread calls (the worker pipelines).
    blocker = sqlite3.connect(settings.audit_db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")

    def sleep(seconds: float) -> None:
        if release_on_first_backoff and blocker.in_transaction:
            blocker.execute("COMMIT")
        time.sleep(seconds)

    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers=bootstrap,
        group_id=f"audit-{topic}",
        topics=(),
        consent_topics=(topic,),
        dead_letter_topic=dlq,
        poll_timeout_s=0.5,
        max_retry_s=max_retry_s,
    )
    worker = StreamWorker(
        config, ingest, container.store, container.engine.message_digest, metrics, sleep=sleep
    )
    return worker, metrics, audit, blocker


def test_consent_audit_entries_missed_after_the_commit_are_written_before_the_offsets(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("consent"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [_consent("kim@audit.example", "a-1", decisions={"marketing_email": True})],
    )
    worker, metrics, audit, blocker = _audit_blocked_worker(
        container, kafka_bootstrap, topic, dlq, max_retry_s=60, release_on_first_backoff=True
    )
    try:
        summary = worker.run(idle_exit_s=3)
    finally:
        blocker.close()
        audit.close()
    assert summary["applied"] == 1
    assert metrics.retries._value.get() >= 1  # the entries were retried, not given up on
    recorded = [e for e in container.audit.entries() if e.action == CONSENT_RECORDED]
    assert [(e.purpose, e.decision) for e in recorded] == [("marketing_email", "allow")]


def test_a_worker_that_cannot_write_the_consent_audit_stops_without_committing(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("consent"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [_consent("lu@audit.example", "a-2", decisions={"marketing_email": False})],
    )
    worker, _metrics, audit, blocker = _audit_blocked_worker(
        container, kafka_bootstrap, topic, dlq, max_retry_s=1.0, release_on_first_backoff=False
    )
    try:
        with pytest.raises(WorkerStoppedError, match="audit log"):
            worker.run(idle_exit_s=3)
    finally:
        blocker.close()
        audit.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": worker.config.group_id})
    try:
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset < 0  # nothing committed: the record is redelivered on restart
    assert read_all(kafka_bootstrap, dlq, expect=0) == []  # and not dead-lettered


def test_a_dead_letter_written_twice_by_a_redelivery_is_replayed_once(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    # A batch redelivered after a lost offset commit writes its dead letters again (at least
    # once). The replay must not apply or dead-letter the same record once per copy: the copies
    # would multiply with every replay.
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            # Refused before and after the replay.
            identify_record("kim@twice.example", "tw-1", traits={"shoe_size": "secret-44"})
        ],
    )

    def ingest_worker() -> StreamWorker:
        return _worker(
            container, kafka_bootstrap, dlq, ingest=(topic,), group="twice", source="sdk"
        )

    assert ingest_worker().run(idle_exit_s=3)["dead_letters"] == 1
    # The offset commit "never reached the broker": the group starts over, as a
    # redelivery after a crash does, and the batch writes its letter a second time.
    rewind = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"twice-{dlq}"})
    try:
        rewind.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        rewind.close()
    assert ingest_worker().run(idle_exit_s=3)["dead_letters"] == 1
    copies = [doc for _, doc, _ in read_all(kafka_bootstrap, dlq, expect=2)]
    assert [(d["source"]["offset"], d["attempt"]) for d in copies] == [(0, 1), (0, 1)]

    report = DeadLetterReplay(ingest_worker()).run()
    assert (report.letters, report.repeated, report.dead_letters) == (2, 1, 1)
    letters = [doc for _, doc, _ in read_all(kafka_bootstrap, dlq, expect=3)]
    assert [d["attempt"] for d in letters] == [1, 1, 2]

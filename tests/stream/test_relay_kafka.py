"""The outbox relay on a real broker: consent and erasure events, published once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import Producer

from identity import outbound
from identity.hashing import Keyring
from identity.model import ConsentInput, ConsentSignal, IdentityEvent
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from privacy.auditing.log import SqliteAuditLog
from privacy.dsr.erasure import ErasureService
from privacy.keys.vault import Vault
from stream.metrics import StreamMetrics
from stream.relay import OutboxRelay
from tests.conftest import REPO, Ids

from .conftest import TopicFactory
from .kafka_support import read_all

pytestmark = pytest.mark.kafka
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[SqliteAuditLog]:
    log = SqliteAuditLog(tmp_path / "audit.sqlite3")
    yield log
    log.close()


def _schema(kind: str) -> dict[str, object]:
    path = REPO / "docs" / "schemas" / "events" / f"{kind}.v1.json"
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_consent_and_erasure_events_reach_their_topics_once_keyed_by_person(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    store: SqliteGraphStore,
    keyring: Keyring,
    policy: IdentityPolicy,
    vault: Vault,
    audit: SqliteAuditLog,
    ids: Ids,
) -> None:
    consent_topic, erasure_topic = new_topic("consent", 3), new_topic("erasure", 3)
    engine = ResolutionEngine(store, keyring, policy, sealer=vault, outbound_events=True)
    marketing = ConsentInput("marketing", True, T0, ConsentSignal.DIRECT, "consent", "ab" * 32)
    (ann,) = engine.ingest(
        [IdentityEvent((ids("email", "ann@relay.example"),), "web", T0, consents=(marketing,))]
    )
    (bob,) = engine.ingest(
        [IdentityEvent((ids("email", "bob@relay.example"),), "web", T0, consents=(marketing,))]
    )
    ErasureService(store, vault, keyring, audit, outbound_events=True).erase(
        [ids("email", "ann@relay.example")], "req-1", "cli"
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    relay = OutboxRelay(
        store,
        producer,
        {
            outbound.CONSENT_CHANGED: consent_topic,
            outbound.PERSON_ERASED: erasure_topic,
            outbound.PERSON_MERGED: erasure_topic,
            outbound.PERSON_SPLIT: erasure_topic,
            outbound.AUDIENCE_MEMBERSHIP: consent_topic,
        },
        StreamMetrics(),
    )
    assert relay.drain() == 2  # bob's consent, ann's erasure (her queued consent was dropped)
    assert relay.drain() == 0  # published once: the outbox is empty now
    assert store.read(lambda tx: tx.outbound_page(10)) == []

    consents = read_all(kafka_bootstrap, consent_topic, expect=1)
    erasures = read_all(kafka_bootstrap, erasure_topic, expect=1)
    assert [(key, doc["person_id"]) for key, doc, _ in consents] == [
        (bob.person_id.encode(), bob.person_id)  # type: ignore[union-attr]
    ]
    [(key, doc, headers)] = erasures
    assert key == ann.person_id.encode()  # type: ignore[union-attr]
    assert headers["event_id"].decode() == doc["event_id"]
    jsonschema.validate(doc, _schema(outbound.PERSON_ERASED))
    jsonschema.validate(consents[0][1], _schema(outbound.CONSENT_CHANGED))
    raw = json.dumps([c[1] for c in consents] + [doc])
    assert "relay.example" not in raw


def test_an_unreachable_topic_keeps_the_events_in_the_outbox(
    kafka_bootstrap: str,
    store: SqliteGraphStore,
    keyring: Keyring,
    policy: IdentityPolicy,
    vault: Vault,
    ids: Ids,
) -> None:
    engine = ResolutionEngine(store, keyring, policy, sealer=vault, outbound_events=True)
    marketing = ConsentInput("marketing", False, T0, ConsentSignal.GPC, "consent", "cd" * 32)
    engine.ingest(
        [IdentityEvent((ids("email", "cy@relay.example"),), "web", T0, consents=(marketing,))]
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000})
    metrics = StreamMetrics()
    relay = OutboxRelay(
        store,
        producer,
        {
            outbound.CONSENT_CHANGED: "no-such-topic-x",
            outbound.PERSON_ERASED: "no-such-topic-y",
            outbound.PERSON_MERGED: "no-such-topic-z",
            outbound.PERSON_SPLIT: "no-such-topic-z",
            outbound.AUDIENCE_MEMBERSHIP: "no-such-topic-w",
        },
        metrics,
        flush_timeout_s=10,
    )
    assert relay.run_once() == 0
    assert len(store.read(lambda tx: tx.outbound_page(10))) == 1
    assert metrics.publish_failures._value.get() == 1


def test_a_split_is_published_once_on_its_topic_keyed_by_the_person_that_was_split(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    store: SqliteGraphStore,
    keyring: Keyring,
    policy: IdentityPolicy,
    vault: Vault,
    ids: Ids,
) -> None:
    split_topic, other_topic = new_topic("split", 3), new_topic("other", 1)
    engine = ResolutionEngine(store, keyring, policy, sealer=vault, outbound_events=True)
    email, phone = ids("email", "cy@relay.example"), ids("phone", "+44 20 7946 0777")
    (cy,) = engine.ingest([IdentityEvent((email, phone), "web", T0)])
    engine.ingest([IdentityEvent((phone, ids("cookie_id", "ck-relay-1")), "web", T0)])
    result = engine.unlink(email, phone)
    assert result.split
    topics = dict.fromkeys(outbound.SCHEMA_VERSIONS, other_topic)
    topics[outbound.PERSON_SPLIT] = split_topic
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    relay = OutboxRelay(store, producer, topics, StreamMetrics())

    assert relay.drain() == 1
    assert relay.drain() == 0  # published once

    [(key, doc, headers)] = read_all(kafka_bootstrap, split_topic, expect=1)
    assert key == cy.person_id.encode()  # type: ignore[union-attr]
    assert headers["event_id"].decode() == doc["event_id"]
    jsonschema.validate(doc, _schema(outbound.PERSON_SPLIT))
    assert doc["person_id"] == cy.person_id
    assert doc["split_person_ids"] == [result.person_id_a]  # the email's part is the new one
    assert "relay.example" not in json.dumps(doc)

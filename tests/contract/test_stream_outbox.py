"""The GraphStore contract for stream ingest: message-id deduplication and the event outbox.

Every backend must pass every test here (SQLite always; Neo4j with ``NEO4J_URI``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from identity import outbound
from identity.hashing import Keyring
from identity.model import (
    ConsentInput,
    ConsentSignal,
    ErasureOutboxEntry,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    OutboundEvent,
    Outcome,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.auditing.log import SqliteAuditLog
from privacy.dsr.erasure import ErasureService
from privacy.keys.vault import Vault
from tests.conftest import Ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PROOF = "ab" * 32


@pytest.fixture
def engine(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault
) -> ResolutionEngine:
    return ResolutionEngine(store, keyring, policy, sealer=vault, outbound_events=True)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[SqliteAuditLog]:
    log = SqliteAuditLog(tmp_path / "audit.sqlite3")
    yield log
    log.close()


def _event(ids: Ids, email: str, message_id: str | None, *, granted: bool = True) -> IdentityEvent:
    return IdentityEvent(
        (ids("email", email),),
        "kafka",
        T0,
        facts=(FactInput(FactKind.EVENT, "page_view", "behaviour", T0, b"{}"),),
        consents=(ConsentInput("marketing", granted, T0, ConsentSignal.DIRECT, "consent", PROOF),),
        message_id=message_id,
    )


def _outbox(store: GraphStore) -> list[OutboundEvent]:
    return store.read(lambda tx: tx.outbound_page(1000))


def test_a_redelivered_message_changes_nothing_when_its_id_was_applied(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    (first,) = engine.ingest([_event(ids, "ann@stream.example", "m-1")])
    assert first.outcome is Outcome.CREATED
    assert first.person_id is not None
    before = store.read(
        lambda tx: tx.person_facts(first.person_id or "", [FactKind.EVENT], FactStatus.ACTIVE)
    )
    # Redelivered alone, and inside a batch next to a new message.
    (again,) = engine.ingest([_event(ids, "ann@stream.example", "m-1")])
    both = engine.ingest(
        [_event(ids, "ann@stream.example", "m-1"), _event(ids, "ann@stream.example", "m-2")]
    )
    assert again.outcome is Outcome.DUPLICATE
    assert [o.outcome for o in both] == [Outcome.DUPLICATE, Outcome.UNCHANGED]
    after = store.read(
        lambda tx: tx.person_facts(first.person_id or "", [FactKind.EVENT], FactStatus.ACTIVE)
    )
    assert len(after) == len(before) + 1  # only m-2's page view
    consents = store.read(lambda tx: tx.person_consents(first.person_id or "", ["marketing"]))
    assert len(consents) == 2  # m-1 and m-2, not m-1 twice


def test_the_same_message_id_twice_in_one_batch_is_applied_once(
    engine: ResolutionEngine, ids: Ids
) -> None:
    outcomes = engine.ingest(
        [_event(ids, "bo@stream.example", "m-9"), _event(ids, "bo@stream.example", "m-9")]
    )
    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.DUPLICATE]


def test_message_ids_are_scoped_to_their_source_and_stored_only_as_keyed_digests(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    web = _event(ids, "cy@stream.example", "shared-id")
    crm = IdentityEvent(web.identifiers, "crm", T0, message_id="shared-id")
    assert [o.outcome for o in engine.ingest([web, crm])] == [Outcome.CREATED, Outcome.UNCHANGED]
    digest = engine.message_digest("kafka", "shared-id")
    assert len(digest) == 16
    assert b"shared-id" not in digest
    assert store.read(lambda tx: tx.seen_messages([digest, b"\0" * 16])) == {digest}


def test_forgotten_message_ids_are_applied_again(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    engine.ingest([_event(ids, "di@stream.example", "m-old")])
    kept = store.write(lambda tx: tx.forget_messages(datetime.now(UTC) - timedelta(days=1)))
    assert kept == 0
    forgotten = store.write(lambda tx: tx.forget_messages(datetime.now(UTC) + timedelta(days=1)))
    assert forgotten == 1
    (again,) = engine.ingest([_event(ids, "di@stream.example", "m-old")])
    assert again.outcome is Outcome.UNCHANGED


def test_every_stored_consent_record_puts_one_event_in_the_outbox_in_order(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    (granted,) = engine.ingest([_event(ids, "ed@stream.example", "m-1")])
    engine.ingest([_event(ids, "ed@stream.example", "m-2", granted=False)])
    events = _outbox(store)
    assert [e.kind for e in events] == [outbound.CONSENT_CHANGED] * 2
    docs = [json.loads(e.payload) for e in events]
    assert [d["granted"] for d in docs] == [True, False]
    assert {e.person_id for e in events} == {granted.person_id}
    assert docs[0]["person_id"] == granted.person_id
    assert "ed@stream.example" not in events[0].payload
    assert store.write(lambda tx: tx.delete_outbound([events[0].event_id, "ev_unknown"])) == 1
    assert [e.event_id for e in _outbox(store)] == [events[1].event_id]


def test_no_event_is_written_when_outbound_events_are_off(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault, ids: Ids
) -> None:
    ResolutionEngine(store, keyring, policy, sealer=vault).ingest([_event(ids, "fi@x.de", None)])
    assert _outbox(store) == []


def test_erasure_drops_the_persons_queued_events_and_publishes_one_erased_event_after_completion(
    store: GraphStore,
    engine: ResolutionEngine,
    ids: Ids,
    vault: Vault,
    keyring: Keyring,
    audit: SqliteAuditLog,
) -> None:
    (ann,) = engine.ingest([_event(ids, "gu@stream.example", "m-1")])
    (bob,) = engine.ingest([_event(ids, "ha@stream.example", "m-2")])
    service = ErasureService(store, vault, keyring, audit, outbound_events=True)
    service.erase([ids("email", "gu@stream.example")], "req-1", "cli")
    events = _outbox(store)
    assert [(e.kind, e.person_id) for e in events] == [
        (outbound.CONSENT_CHANGED, bob.person_id),
        (outbound.PERSON_ERASED, ann.person_id),
    ]
    doc = json.loads(events[1].payload)
    assert doc["person_id"] == ann.person_id
    assert set(doc) == {
        "schema",
        "type",
        "version",
        "event_id",
        "occurred_at",
        "person_id",
        "erasure_id",
    }


def test_an_erased_event_is_held_while_its_erasure_is_pending(store: GraphStore) -> None:
    held = outbound.person_erased("p_held", "e_pending", T0)
    free = outbound.person_erased("p_free", "e_unknown", T0)

    def stage(tx: GraphTransaction) -> None:
        tx.add_erasure_outbox(ErasureOutboxEntry("e_pending", "req", "cli", T0, ("n_1",), {}))
        tx.add_outbound([held, free])

    store.write(stage)
    assert [e.event_id for e in _outbox(store)] == [free.event_id]
    store.write(lambda tx: tx.complete_erasure("e_pending"))
    assert [e.event_id for e in _outbox(store)] == [held.event_id, free.event_id]


def test_outbox_pages_are_bounded_and_oldest_first(store: GraphStore) -> None:
    events = [outbound.person_erased(f"p_{i}", f"e_{i}", T0) for i in range(5)]
    store.write(lambda tx: tx.add_outbound(events))
    page = store.read(lambda tx: tx.outbound_page(3))
    assert [e.event_id for e in page] == [e.event_id for e in events[:3]]
    assert page[0] == events[0]

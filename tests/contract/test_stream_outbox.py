"""The GraphStore contract for stream ingest: message-id deduplication and the event outbox.

Every backend must pass every test here (SQLite always; Neo4j with ``NEO4J_URI``).
"""

from __future__ import annotations

import json
import secrets
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


def test_a_redelivery_is_a_duplicate_when_the_hash_key_rotated_in_between(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault, ids: Ids
) -> None:
    before = ResolutionEngine(store, keyring, policy, sealer=vault)
    (first,) = before.ingest([_event(ids, "rot@stream.example", "m-rot")])
    assert first.outcome is Outcome.CREATED
    # The rotation: a new primary key, the old one still known (the overlap).
    rotated = keyring.with_keys({"k-next": secrets.token_bytes(32)}, "k-next")
    after = ResolutionEngine(store, rotated, policy, sealer=vault)
    assert after.message_digest("kafka", "m-rot") != before.message_digest("kafka", "m-rot")
    (again,) = after.ingest([_event(ids, "rot@stream.example", "m-rot")])
    assert again.outcome is Outcome.DUPLICATE
    # A new id after the rotation is recorded under the new primary key and deduplicated too.
    (new,) = after.ingest([_event(ids, "rot2@stream.example", "m-rot-2")])
    (new_again,) = after.ingest([_event(ids, "rot2@stream.example", "m-rot-2")])
    assert (new.outcome, new_again.outcome) == (Outcome.CREATED, Outcome.DUPLICATE)
    assert store.read(lambda tx: tx.seen_messages([after.message_digest("kafka", "m-rot-2")])) == {
        after.message_digest("kafka", "m-rot-2")
    }


def test_a_merge_of_existing_persons_puts_one_person_merged_event_in_the_outbox(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    def identify(*pairs: tuple[str, str]) -> IdentityEvent:
        return IdentityEvent(tuple(ids(t, v) for t, v in pairs), "kafka", T0)

    (ann,) = engine.ingest([identify(("email", "ann@merge.example"))])
    (bo,) = engine.ingest([identify(("customer_id", "C-merge-1"))])
    queued = [e.event_id for e in _outbox(store)]
    store.write(lambda tx: tx.delete_outbound(queued))
    (both,) = engine.ingest(
        [identify(("email", "ann@merge.example"), ("customer_id", "C-merge-1"))]
    )
    assert both.outcome is Outcome.MERGED
    (event,) = _outbox(store)
    document = json.loads(event.payload)
    assert (event.kind, document["type"], event.person_id) == (
        outbound.PERSON_MERGED,
        "person.merged",
        both.person_id,
    )
    assert {document["person_id"], *document["merged_person_ids"]} == {ann.person_id, bo.person_id}
    # A new person created and merged within one batch was never published: no event.
    store.write(lambda tx: tx.delete_outbound([event.event_id]))
    engine.ingest(
        [
            identify(("email", "cy@merge.example")),
            identify(("customer_id", "C-merge-2")),
            identify(("email", "cy@merge.example"), ("customer_id", "C-merge-2")),
        ]
    )
    assert _outbox(store) == []


def test_an_unlink_that_splits_a_person_puts_one_person_split_event_in_the_outbox(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    email, phone, device = (
        ids("email", "ann@split.example"),
        ids("phone", "+44 20 7946 0123"),
        ids("cookie_id", "ck-split-6f1c2a9e"),
    )
    (ann,) = engine.ingest([IdentityEvent((email, phone), "kafka", T0)])
    engine.ingest([IdentityEvent((phone, device), "kafka", T0)])  # the larger part: keeps the id
    queued = [e.event_id for e in _outbox(store)]
    store.write(lambda tx: tx.delete_outbound(queued))

    result = engine.unlink(email, phone)

    assert result.split
    (event,) = _outbox(store)
    document = json.loads(event.payload)
    assert (event.kind, document["type"], document["reason"]) == (
        outbound.PERSON_SPLIT,
        "person.split",
        "unlink",
    )
    # The event names the person that was split and the new person, nothing else.
    assert event.person_id == document["person_id"] == ann.person_id
    new = {result.person_id_a, result.person_id_b} - {ann.person_id}
    assert document["split_person_ids"] == sorted(new)
    # Whole values only: a short digit run such as "7946" can occur in a random hex event id.
    for raw in ("ann@split.example", "2079460123", "20 7946 0123", "ck-split-6f1c2a9e"):
        assert raw not in event.payload


def test_an_unlink_that_leaves_the_person_whole_writes_no_split_event(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    email, phone, device = (
        ids("email", "bo@split.example"),
        ids("phone", "+44 20 7946 0456"),
        ids("cookie_id", "ck-whole-0a1b2c3d"),
    )
    for pair in ((email, phone), (phone, device), (device, email)):
        engine.ingest([IdentityEvent(pair, "kafka", T0)])
    queued = [e.event_id for e in _outbox(store)]
    store.write(lambda tx: tx.delete_outbound(queued))

    result = engine.unlink(email, phone)  # still joined through the device

    assert not result.split
    assert _outbox(store) == []

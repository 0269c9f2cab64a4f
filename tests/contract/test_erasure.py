"""The GraphStore contract for erasure, the suppression list and the erasure outbox.

Every backend must pass every test here (SQLite always; Neo4j with ``NEO4J_URI``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from identity.hashing import HashedIdentifier, Keyring
from identity.model import (
    ConsentInput,
    ConsentSignal,
    ErasureOutboxEntry,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    Outcome,
    RefusalReason,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore
from privacy.keys.vault import Vault
from tests.conftest import Ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault
) -> ResolutionEngine:
    return ResolutionEngine(store, keyring, policy, sealer=vault)


def _ingest(engine: ResolutionEngine, ids: Ids, *pairs: tuple[str, str], refuse: str = "") -> str:
    event = IdentityEvent(
        tuple(ids(t, v) for t, v in pairs),
        "web",
        T0,
        facts=(FactInput(FactKind.ATTRIBUTE, "city", "location", T0, b'"Lisbon"'),),
        consents=(ConsentInput("marketing", True, T0, ConsentSignal.DIRECT, "consent", "ab" * 32),),
    )
    (outcome,) = engine.ingest([event])
    assert outcome.person_id is not None
    return outcome.person_id


def test_erase_person_deletes_the_person_and_everything_keyed_by_its_nodes(
    store: GraphStore, engine: ResolutionEngine, ids: Ids, keyring: Keyring
) -> None:
    ann = _ingest(engine, ids, ("customer_id", "C-1"), ("email", "ann@x.de"), ("cookie_id", "k1"))
    bob = _ingest(engine, ids, ("customer_id", "C-2"), ("email", "bob@x.de"))
    # A refusal holding one of ann's hashes: her email named next to another customer id (the
    # higher-priority C-9 wins, one customer id per person), and one holding bob's: it stays.
    (conflict,) = engine.ingest([ids.event(("email", "ann@x.de"), ("customer_id", "C-9"))])
    assert [r.hashed for r in conflict.refusals] == [keyring.hash(ids("email", "ann@x.de"))]
    engine.ingest([ids.event(("email", "bob@x.de"), ("customer_id", "C-8"))])
    ann_nodes = store.read(lambda tx: tx.cluster(ann)).nodes
    before = store.stats()

    counts = store.write(lambda tx: tx.erase_person(ann))

    assert counts.persons == 1
    assert set(counts.node_ids) == {n.node_id for n in ann_nodes}
    assert set(counts.hashes) == {n.hashed for n in ann_nodes}
    assert counts.links == 2
    assert counts.facts == 2  # city, and the email's kept raw value (keep_raw)
    assert counts.refusals == 1
    assert counts.consents == 1
    after = store.stats()
    assert after.persons == before.persons - 1
    assert after.identifiers == before.identifiers - 3
    assert after.links == before.links - 2
    assert after.consents == before.consents - 1
    assert after.facts == before.facts - counts.facts
    assert after.refusals == before.refusals - counts.refusals
    assert after.refusals == 1  # bob's
    assert store.read(lambda tx: tx.person(ann)) is None
    assert store.read(lambda tx: tx.find_identifiers([n.hashed for n in ann_nodes])) == []
    assert store.read(lambda tx: tx.person(bob)) is not None
    assert len(store.read(lambda tx: tx.cluster(bob)).nodes) == 2


def test_delete_refusals_deletes_only_refusals_of_exactly_the_given_hashes(
    store: GraphStore, engine: ResolutionEngine, ids: Ids, keyring: Keyring
) -> None:
    _ingest(engine, ids, ("customer_id", "C-1"), ("email", "ann@x.de"))
    engine.ingest([ids.event(("customer_id", "C-2"), ("email", "ann@x.de"))])  # email refused
    engine.ingest([ids.event(("email", "test@example.com"))])  # blocked value
    email = keyring.hash(ids("email", "ann@x.de"))
    assert store.stats().refusals == 2

    other_key = HashedIdentifier(email.type, "k-old", email.digest)
    assert store.write(lambda tx: tx.delete_refusals([other_key])) == 0
    assert store.write(lambda tx: tx.delete_refusals([email])) == 1
    assert store.stats().refusals == 1


def test_erase_person_of_an_unknown_person_deletes_nothing(store: GraphStore) -> None:
    counts = store.write(lambda tx: tx.erase_person("p_missing"))

    assert (counts.persons, counts.node_ids, counts.links, counts.facts) == (0, (), 0, 0)


def test_suppression_list_matches_exact_hashes_and_can_be_lifted(
    store: GraphStore, keyring: Keyring, ids: Ids
) -> None:
    ann = keyring.hash(ids("email", "ann@x.de"))
    other_key = HashedIdentifier(ann.type, "k-old", ann.digest)
    other_type = HashedIdentifier("cookie_id", ann.key_id, ann.digest)

    assert store.write(lambda tx: tx.suppress([ann, ann])) == 1
    assert store.write(lambda tx: tx.suppress([ann])) == 0  # already there

    found = store.read(lambda tx: tx.suppressed([ann, other_key, other_type]))
    assert found == {ann}
    assert store.write(lambda tx: tx.lift_suppression([ann, other_key])) == 1
    assert store.read(lambda tx: tx.suppressed([ann])) == set()


def test_erasure_outbox_entries_stay_pending_until_completed_and_survive_reopening(
    store: GraphStore,
) -> None:
    entry = ErasureOutboxEntry("e_1", "req-1", "cli", T0, ("n_a", "n_b"), {"persons_erased": 1})
    store.write(lambda tx: tx.add_erasure_outbox(entry))

    (pending,) = store.read(lambda tx: tx.pending_erasures())
    assert pending == entry
    assert store.write(lambda tx: tx.complete_erasure("e_1")) is True
    assert store.write(lambda tx: tx.complete_erasure("e_1")) is False
    assert store.read(lambda tx: tx.pending_erasures()) == []


def test_ingest_refuses_suppressed_identifiers_and_links_the_others(
    store: GraphStore, engine: ResolutionEngine, ids: Ids, keyring: Keyring
) -> None:
    store.write(lambda tx: tx.suppress([keyring.hash(ids("email", "ann@x.de"))]))

    (mixed, alone) = engine.ingest(
        [
            ids.event(("email", "ann@x.de"), ("cookie_id", "k1")),
            ids.event(("email", "ann@x.de")),
        ]
    )

    assert mixed.outcome is Outcome.CREATED
    assert [r.reason for r in mixed.refusals] == [RefusalReason.SUPPRESSED]
    assert alone.outcome is Outcome.REFUSED
    assert [r.reason for r in alone.refusals] == [RefusalReason.SUPPRESSED]
    assert store.stats().identifiers == 1  # only the cookie
    assert store.stats().refusals == 2  # recorded (keyed hash only)
    assert engine.resolve(ids("email", "ann@x.de")) is None


def test_ingest_refuses_an_identifier_suppressed_under_an_older_hash_key(
    store: GraphStore, policy: IdentityPolicy, vault: Vault, ids: Ids, keyring: Keyring
) -> None:
    store.write(lambda tx: tx.suppress([keyring.hash(ids("email", "ann@x.de"))]))
    rotated = keyring.with_keys({"k2": b"\x07" * 16 + bytes(range(16))}, "k2")
    engine = ResolutionEngine(store, rotated, policy, sealer=vault)

    (outcome,) = engine.ingest([ids.event(("email", "ann@x.de"))])

    assert outcome.outcome is Outcome.REFUSED
    assert outcome.refusals[0].reason is RefusalReason.SUPPRESSED
    assert outcome.refusals[0].hashed.key_id == "k2"  # recorded under the primary key


def test_quarantined_facts_are_erased_with_the_person(
    store: GraphStore, engine: ResolutionEngine, ids: Ids
) -> None:
    quarantined = FactInput(
        FactKind.ATTRIBUTE, "city", "location", T0, b'"x"', FactStatus.QUARANTINED, ("PERSON",)
    )
    (outcome,) = engine.ingest(
        [IdentityEvent((ids("customer_id", "C-1"),), "web", T0, facts=(quarantined,))]
    )
    assert outcome.person_id is not None

    counts = store.write(lambda tx: tx.erase_person(outcome.person_id or ""))

    assert counts.facts == 1
    assert store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 10)) == []

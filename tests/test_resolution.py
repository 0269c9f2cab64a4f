"""Deterministic resolution: linking, merging, limits, blocked values, priority, idempotency."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from identity.hashing import HashKey, Keyring
from identity.model import Outcome, RefusalReason
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from privacy.vault import Vault

from .conftest import T0, Ids


def test_identifiers_seen_together_resolve_to_one_new_person(
    engine: ResolutionEngine, ids: Ids
) -> None:
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"))])
    assert outcome.outcome is Outcome.CREATED
    assert outcome.new_identifiers == 2
    assert engine.resolve(ids("email", "ANN@shop.de")) == outcome.person_id
    assert engine.resolve(ids("phone", "020 7946 0958")) == outcome.person_id


@pytest.mark.sqlite_only
def test_person_ids_are_random_not_derived_from_identifiers(
    tmp_path: object, store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids
) -> None:
    first = ResolutionEngine(store, keyring, policy).ingest([ids.event(("cookie_id", "c1"))])
    store.write(lambda tx: tx._conn.execute("DELETE FROM identifiers"))
    second = ResolutionEngine(store, keyring, policy).ingest([ids.event(("cookie_id", "c1"))])
    assert first[0].person_id != second[0].person_id


def test_merge_is_transitive_across_events(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    engine.ingest([ids.event(("phone", "+442079460958"), ("cookie_id", "c2"))])
    assert engine.resolve(ids("cookie_id", "c1")) != engine.resolve(ids("cookie_id", "c2"))
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"))])
    assert outcome.outcome is Outcome.MERGED
    assert len(outcome.merged_person_ids) == 1
    person = engine.resolve(ids("cookie_id", "c1"))
    assert person == engine.resolve(ids("cookie_id", "c2")) == outcome.person_id
    assert store.stats().persons == 1


def test_merge_chain_inside_one_batch_ends_in_one_person(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    outcomes = engine.ingest(
        [
            ids.event(("cookie_id", "a"), ("cookie_id", "b")),
            ids.event(("cookie_id", "c"), ("cookie_id", "d")),
            ids.event(("cookie_id", "e")),
            ids.event(("cookie_id", "b"), ("cookie_id", "c")),
            ids.event(("cookie_id", "d"), ("cookie_id", "e")),
        ]
    )
    people = {engine.resolve(ids("cookie_id", x)) for x in "abcde"}
    assert len(people) == 1
    assert outcomes[-1].person_id in people
    assert store.stats().persons == 1
    assert store.stats().identifiers == 5


def test_limit_refuses_the_lowest_priority_conflicting_identifier(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    engine.ingest([ids.event(("customer_id", "C-1"), ("email", "ann@shop.de"))])
    engine.ingest([ids.event(("customer_id", "C-2"), ("email", "bob@shop.de"))])
    # The same email seen with a second customer id: customer_id allows one per person.
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("customer_id", "C-2"))])
    assert outcome.outcome is Outcome.UNCHANGED
    (refusal,) = outcome.refusals
    assert refusal.reason is RefusalReason.LIMIT_EXCEEDED
    assert refusal.hashed.type == "email"  # lower priority than customer_id: it is dropped
    assert refusal.position == 0
    assert "customer_id" in refusal.detail
    assert engine.resolve(ids("email", "ann@shop.de")) != engine.resolve(ids("customer_id", "C-2"))
    assert store.stats().persons == 2
    assert store.stats().refusals == 1


def test_limit_refusal_keeps_new_higher_priority_identifier_as_its_own_person(
    engine: ResolutionEngine, ids: Ids
) -> None:
    engine.ingest([ids.event(("customer_id", "C-1"), ("cookie_id", "shared"))])
    (outcome,) = engine.ingest([ids.event(("cookie_id", "shared"), ("customer_id", "C-2"))])
    assert outcome.outcome is Outcome.CREATED
    assert [r.hashed.type for r in outcome.refusals] == ["cookie_id"]
    assert engine.resolve(ids("customer_id", "C-2")) == outcome.person_id
    assert engine.resolve(ids("cookie_id", "shared")) == engine.resolve(ids("customer_id", "C-1"))


def test_limit_counts_new_identifiers_of_the_same_event(engine: ResolutionEngine, ids: Ids) -> None:
    (outcome,) = engine.ingest([ids.event(("customer_id", "C-1"), ("customer_id", "C-2"))])
    assert outcome.outcome is Outcome.CREATED
    assert outcome.new_identifiers == 1
    assert [r.position for r in outcome.refusals] == [1]  # tie on priority: event order wins


def test_priority_not_position_decides_what_is_dropped(engine: ResolutionEngine, ids: Ids) -> None:
    engine.ingest([ids.event(("customer_id", "C-1"), ("phone", "+442079460958"))])
    engine.ingest([ids.event(("customer_id", "C-2"), ("email", "bob@shop.de"))])
    # customer_id C-1 is listed last but has the highest priority; the email conflicts.
    (outcome,) = engine.ingest(
        [ids.event(("email", "bob@shop.de"), ("phone", "+442079460958"), ("customer_id", "C-1"))]
    )
    refused = {(r.hashed.type, r.position) for r in outcome.refusals}
    assert refused == {("email", 0)}
    assert engine.resolve(ids("phone", "+442079460958")) == engine.resolve(
        ids("customer_id", "C-1")
    )


def test_blocked_values_are_refused_and_the_rest_of_the_event_is_linked(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    (outcome,) = engine.ingest(
        [
            ids.event(
                ("idfa", "00000000-0000-0000-0000-000000000000"),
                ("email", "test@shop.de"),
                ("cookie_id", "c1"),
            )
        ]
    )
    assert outcome.outcome is Outcome.CREATED
    assert sorted(r.reason.value for r in outcome.refusals) == ["blocked_pattern", "blocked_value"]
    assert store.stats().identifiers == 1
    assert engine.resolve(ids("idfa", "00000000-0000-0000-0000-000000000000")) is None


def test_all_zero_ad_ids_never_join_two_people(engine: ResolutionEngine, ids: Ids) -> None:
    zero = ("idfa", "00000000-0000-0000-0000-000000000000")
    engine.ingest([ids.event(zero, ("email", "ann@shop.de"))])
    engine.ingest([ids.event(zero, ("email", "bob@shop.de"))])
    assert engine.resolve(ids("email", "ann@shop.de")) != engine.resolve(
        ids("email", "bob@shop.de")
    )


def test_event_with_only_blocked_identifiers_is_refused(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    (outcome,) = engine.ingest([ids.event(("customer_id", "null"))])
    assert outcome.outcome is Outcome.REFUSED
    assert outcome.person_id is None
    assert store.stats().persons == 0
    assert store.stats().refusals == 1


def test_reingesting_the_same_event_changes_nothing(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    event = ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"), ("cookie_id", "c1"))
    (first,) = engine.ingest([event])
    before = store.stats()
    (again,) = engine.ingest([event])
    (later,) = engine.ingest(
        [ids.event(*[("email", "ann@shop.de"), ("cookie_id", "c1")], at=T0 + timedelta(days=1))]
    )
    assert again.outcome is Outcome.UNCHANGED
    assert later.outcome is Outcome.UNCHANGED
    assert again.person_id == later.person_id == first.person_id
    assert store.stats() == before


def test_sightings_widen_first_and_last_seen(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de"), at=T0)])
    engine.ingest([ids.event(("email", "ann@shop.de"), at=T0 + timedelta(days=3))])
    engine.ingest([ids.event(("email", "ann@shop.de"), at=T0 - timedelta(days=2))])
    person = engine.resolve(ids("email", "ann@shop.de"))
    assert person is not None
    (node,) = store.read(lambda tx: tx.cluster(person)).nodes
    assert node.first_seen == T0 - timedelta(days=2)
    assert node.last_seen == T0 + timedelta(days=3)


def test_duplicate_identifier_within_an_event_counts_once(
    engine: ResolutionEngine, ids: Ids
) -> None:
    (outcome,) = engine.ingest([ids.event(("email", "Ann@shop.de"), ("email", "ann@SHOP.de"))])
    assert outcome.new_identifiers == 1
    assert outcome.refusals == ()


def test_identifiers_hashed_under_an_old_key_are_found_and_rehashed(
    store: SqliteGraphStore, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    old = HashKey("k-old", secrets.token_bytes(32))
    new = HashKey("k-new", secrets.token_bytes(32))
    before = ResolutionEngine(store, Keyring([old], "k-old"), policy, sealer=vault)
    (created,) = before.ingest([ids.event(("email", "ann@shop.de"))])

    rotated = ResolutionEngine(store, Keyring([old, new], "k-new"), policy, sealer=vault)
    assert rotated.resolve(ids("email", "ann@shop.de")) == created.person_id  # lookup across keys
    (seen,) = rotated.ingest([ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"))])
    assert seen.person_id == created.person_id
    nodes = store.read(lambda tx: tx.cluster(created.person_id or "")).nodes
    assert {n.hashed.key_id for n in nodes} == {"k-new"}  # re-hashed lazily on sight
    assert store.stats().identifiers == 2
    assert (
        ResolutionEngine(store, Keyring([new], "k-new"), policy, sealer=vault).resolve(
            ids("email", "ann@shop.de")
        )
        == created.person_id
    )

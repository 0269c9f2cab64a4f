"""Deterministic resolution: linking, merging, limits, blocked values, priority, idempotency."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, timedelta

import pytest

from identity.errors import ConfigurationError
from identity.hashing import HashKey, Keyring
from identity.model import (
    ConsentInput,
    ConsentSignal,
    EventOutcome,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    Outcome,
    RefusalReason,
)
from identity.policy import IdentityPolicy
from identity.resolution import RehashPage, ResolutionEngine, _utcnow
from identity.store.sqlite import SqliteGraphStore
from privacy.access.policy_engine import IDENTIFIER_CATEGORY
from privacy.keys.vault import Vault
from tests.conftest import T0, Ids

Pair = tuple[str, str]


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
    # The detail is what the caller reads in the ingest answer: pinned word for word.
    assert {r.detail for r in outcome.refusals} == {"value is blocked by policy"}
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


# -- every identifier of an event accounted for; limits at their boundary (issue 21) ------------


def _accounted(
    outcome: EventOutcome, engine: ResolutionEngine, ids: Ids, pairs: list[Pair]
) -> None:
    """Every identifier of the event either resolves to the outcome's person or was refused."""
    refused = {r.position for r in outcome.refusals}
    for position, pair in enumerate(pairs):
        if position not in refused:
            assert engine.resolve(ids(*pair)) == outcome.person_id, pair


def test_a_duplicate_identifier_does_not_hide_the_ones_after_it(
    engine: ResolutionEngine, ids: Ids
) -> None:
    pairs = [("email", "ann@shop.de"), ("email", "ANN@shop.de"), ("phone", "+442079460958")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert (outcome.outcome, outcome.new_identifiers, outcome.refusals) == (Outcome.CREATED, 2, ())
    _accounted(outcome, engine, ids, pairs)


def test_a_blocked_identifier_does_not_hide_an_existing_one_after_it(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    (first,) = engine.ingest([ids.event(("email", "ann@shop.de"))])
    # customer_id has the highest priority, so the blocked one is looked at first.
    pairs = [("customer_id", "null"), ("email", "ann@shop.de")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert (outcome.outcome, outcome.person_id) == (Outcome.UNCHANGED, first.person_id)
    assert [r.position for r in outcome.refusals] == [0]
    assert store.stats().identifiers == 1


def test_a_new_identifier_does_not_hide_an_existing_one_after_it(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    (first,) = engine.ingest([ids.event(("email", "ann@shop.de"))])
    pairs = [("customer_id", "C-9"), ("email", "ann@shop.de")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert (outcome.outcome, outcome.person_id) == (Outcome.LINKED, first.person_id)
    assert outcome.new_identifiers == 1
    _accounted(outcome, engine, ids, pairs)
    assert store.stats().identifiers == 2


def test_an_identifier_seen_earlier_in_the_batch_does_not_hide_the_ones_after_it(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de"))])
    engine.ingest([ids.event(("cookie_id", "c1"))])
    pairs = [("email", "ann@shop.de"), ("cookie_id", "c1")]
    first, second = engine.ingest([ids.event(pairs[0]), ids.event(*pairs)])
    assert first.outcome is Outcome.UNCHANGED
    assert second.outcome is Outcome.MERGED
    _accounted(second, engine, ids, pairs)
    assert (store.stats().persons, store.stats().identifiers) == (1, 2)


def test_two_identifiers_of_one_person_do_not_hide_a_new_one_after_them(
    engine: ResolutionEngine, ids: Ids
) -> None:
    (first,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"))])
    pairs = [("email", "ann@shop.de"), ("phone", "+442079460958"), ("cookie_id", "c1")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert (outcome.outcome, outcome.person_id) == (Outcome.LINKED, first.person_id)
    assert (outcome.new_identifiers, outcome.refusals) == (1, ())
    _accounted(outcome, engine, ids, pairs)


def test_a_limit_refusal_does_not_hide_the_identifiers_after_it(
    engine: ResolutionEngine, ids: Ids
) -> None:
    engine.ingest([ids.event(("customer_id", "C-1"), ("email", "ann@shop.de"))])
    pairs = [("customer_id", "C-2"), ("email", "ann@shop.de"), ("cookie_id", "c1")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert outcome.outcome is Outcome.CREATED
    assert [(r.position, r.reason) for r in outcome.refusals] == [(1, RefusalReason.LIMIT_EXCEEDED)]
    _accounted(outcome, engine, ids, pairs)
    assert engine.resolve(ids("cookie_id", "c1")) == outcome.person_id


def test_a_suppressed_identifier_does_not_hide_the_existing_ones_of_its_event(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore, keyring: Keyring
) -> None:
    (first,) = engine.ingest([ids.event(("phone", "+442079460958"))])
    store.write(lambda tx: tx.suppress([keyring.hash(ids("email", "gone@shop.de"))]))
    pairs = [("email", "gone@shop.de"), ("phone", "+442079460958")]
    (outcome,) = engine.ingest([ids.event(*pairs)])
    assert (outcome.outcome, outcome.person_id) == (Outcome.UNCHANGED, first.person_id)
    assert [(r.position, r.reason, r.detail) for r in outcome.refusals] == [
        (
            0,
            RefusalReason.SUPPRESSED,
            "identifier was erased at the subject's request and is suppressed",
        )
    ]
    assert engine.resolve(ids("email", "gone@shop.de")) is None
    assert store.stats().identifiers == 1


def test_a_merge_to_exactly_the_limit_is_allowed(engine: ResolutionEngine, ids: Ids) -> None:
    # customer_id allows one per person: one customer id joining a person without one is fine.
    engine.ingest([ids.event(("customer_id", "C-1"))])
    engine.ingest([ids.event(("email", "ann@shop.de"))])
    (outcome,) = engine.ingest([ids.event(("customer_id", "C-1"), ("email", "ann@shop.de"))])
    assert (outcome.outcome, outcome.refusals) == (Outcome.MERGED, ())


def test_a_new_identifier_to_exactly_the_limit_is_allowed(
    engine: ResolutionEngine, ids: Ids
) -> None:
    # phone allows three per person.
    phones = [("phone", f"+4420794609{n}") for n in (51, 52, 53, 54)]
    (outcome,) = engine.ingest([ids.event(*phones)])
    assert [r.position for r in outcome.refusals] == [3]
    assert outcome.new_identifiers == 3


def test_a_person_already_over_a_limit_may_still_link_what_does_not_grow_it(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    # Persons can be over a limit that was lowered after they were linked. Linking them to more
    # identifiers of other types is allowed; more of the type over the limit is not.
    two = policy.types["customer_id"].model_copy(update={"max_per_person": 2})
    loose = policy.model_copy(update={"types": {**policy.types, "customer_id": two}})
    ResolutionEngine(store, keyring, loose, sealer=vault).ingest(
        [ids.event(("customer_id", "C-1"), ("customer_id", "C-2"), ("email", "ann@shop.de"))]
    )
    engine = ResolutionEngine(store, keyring, policy, sealer=vault)
    engine.ingest([ids.event(("cookie_id", "c1"))])

    (merged,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    (grown,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("customer_id", "C-3"))])

    assert (merged.outcome, merged.refusals) == (Outcome.MERGED, ())
    # The new customer id has the higher priority: the email that would join it is dropped.
    assert grown.outcome is Outcome.CREATED
    assert [r.hashed.type for r in grown.refusals] == ["email"]


# -- merges inside a batch, and which person survives ------------------------------------------


def test_every_outcome_of_a_batch_names_the_person_that_survived_it(
    engine: ResolutionEngine, ids: Ids
) -> None:
    outcomes = engine.ingest(
        [
            ids.event(("cookie_id", "a")),
            ids.event(("cookie_id", "b")),
            ids.event(("cookie_id", "a"), ("cookie_id", "b")),
        ]
    )
    survivor = engine.resolve(ids("cookie_id", "a"))
    assert [o.person_id for o in outcomes] == [survivor] * 3
    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.CREATED, Outcome.MERGED]


def _named_engine(
    store: SqliteGraphStore,
    keyring: Keyring,
    policy: IdentityPolicy,
    vault: Vault,
    names: list[str],
) -> ResolutionEngine:
    """An engine whose new persons get ``names`` in order, so random ids cannot decide a test."""
    pool = iter(names)
    return ResolutionEngine(store, keyring, policy, person_ids=lambda: next(pool), sealer=vault)


def test_the_larger_person_survives_a_merge(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    engine = _named_engine(store, keyring, policy, vault, ["p_a", "p_b"])
    engine.ingest([ids.event(("email", "ann@shop.de"))])  # p_a: 1 identifier
    engine.ingest([ids.event(("cookie_id", "c1"), ("cookie_id", "c2"))])  # p_b: 2 identifiers
    # The email is accepted first (higher priority), yet the larger person survives.
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    assert (outcome.person_id, outcome.merged_person_ids) == ("p_b", ("p_a",))


def test_between_persons_of_equal_size_the_first_accepted_survives(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    # The survivor is the larger id once and the smaller once: ids never decide.
    for tag, names, expected in (
        ("x", ["p_a", "p_b"], ("p_b", ("p_a",))),
        ("y", ["p_d", "p_c"], ("p_c", ("p_d",))),
    ):
        engine = _named_engine(store, keyring, policy, vault, names)
        engine.ingest([ids.event(("cookie_id", tag))])  # names[0]
        engine.ingest([ids.event(("email", f"{tag}@shop.de"))])  # names[1]
        # The email (priority 90) is accepted before the cookie (priority 10).
        (outcome,) = engine.ingest([ids.event(("cookie_id", tag), ("email", f"{tag}@shop.de"))])
        assert (outcome.person_id, outcome.merged_person_ids) == expected


def test_the_same_pair_twice_in_a_batch_is_one_link_spanning_both_sightings(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    pair = (("email", "ann@shop.de"), ("phone", "+442079460958"))
    later = T0 + timedelta(days=2)
    outcomes = engine.ingest(
        [ids.event(*pair, at=later), ids.event(*pair, at=T0), ids.event(*pair, at=later)]
    )
    person = outcomes[0].person_id
    assert person is not None
    (link,) = store.read(lambda tx: tx.cluster(person)).links
    assert (link.first_at, link.last_at, link.source) == (T0, later, "web")
    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.UNCHANGED, Outcome.UNCHANGED]


def test_the_same_pair_from_two_sources_is_two_links(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    pair = (("email", "ann@shop.de"), ("phone", "+442079460958"))
    outcomes = engine.ingest([ids.event(*pair), ids.event(*pair, source="crm")])
    person = outcomes[0].person_id
    assert person is not None
    links = store.read(lambda tx: tx.cluster(person)).links
    assert sorted(link.source for link in links) == ["crm", "web"]


# -- re-hashing under a new key, page by page ---------------------------------------------------


def test_rehash_page_moves_kept_identifiers_to_the_primary_key_page_by_page(
    store: SqliteGraphStore, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    old = HashKey("k-old", secrets.token_bytes(32))
    new = HashKey("k-new", secrets.token_bytes(32))
    ResolutionEngine(store, Keyring([old], "k-old"), policy, sealer=vault).ingest(
        [
            ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"), ("cookie_id", "c1")),
            ids.event(("email", "bob@shop.de")),
        ]
    )
    rotated = ResolutionEngine(store, Keyring([old, new], "k-new"), policy, sealer=vault)

    pages = []
    cursor = ""
    while True:
        page = rotated.rehash_page(cursor, limit=3)
        pages.append(page)
        if page.last_node_id is None:
            break
        cursor = page.last_node_id

    # Node ids are in creation order: ann's email, phone, cookie, then bob's email. The cookie
    # has no kept raw value (cookies are not keep_raw): it waits to be seen again.
    persons = [rotated.resolve(ids("email", e)) for e in ("ann@shop.de", "bob@shop.de")]
    clusters = store.read(lambda tx: [tx.cluster(p or "") for p in persons])
    nodes = sorted(n.node_id for cluster in clusters for n in cluster.nodes)
    assert pages == [RehashPage(2, 1, nodes[2]), RehashPage(1, 0, nodes[3]), RehashPage(0, 0, None)]
    only_new = ResolutionEngine(store, Keyring([new], "k-new"), policy, sealer=vault)
    for pair in (("email", "ann@shop.de"), ("phone", "+442079460958"), ("email", "bob@shop.de")):
        assert only_new.resolve(ids(*pair)) is not None, pair
    assert only_new.resolve(ids("cookie_id", "c1")) is None  # found again when next seen
    # A re-run finds only the cookie: what is under the primary key is skipped.
    assert rotated.rehash_page("", limit=10) == RehashPage(0, 1, nodes[2])


def test_rehash_page_needs_the_vault(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ResolutionEngine(store, keyring, policy).rehash_page("")
    assert str(raised.value) == "re-hashing needs the vault to read kept raw identifiers"


def test_a_person_at_a_limit_may_join_one_without_that_type(
    engine: ResolutionEngine, ids: Ids
) -> None:
    # The higher-priority email's person has no customer id; the cookie's person brings one:
    # the merged person has exactly one, which customer_id allows.
    engine.ingest([ids.event(("email", "ann@shop.de"))])
    engine.ingest([ids.event(("customer_id", "C-1"), ("cookie_id", "c1"))])
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    assert (outcome.outcome, outcome.refusals) == (Outcome.MERGED, ())


def test_a_person_over_a_limit_is_not_joined_to_another(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    # Joining it would bring the other person more customer ids than allowed.
    two = policy.types["customer_id"].model_copy(update={"max_per_person": 2})
    loose = policy.model_copy(update={"types": {**policy.types, "customer_id": two}})
    ResolutionEngine(store, keyring, loose, sealer=vault).ingest(
        [ids.event(("customer_id", "C-1"), ("customer_id", "C-2"), ("cookie_id", "c1"))]
    )
    engine = ResolutionEngine(store, keyring, policy, sealer=vault)
    (first,) = engine.ingest([ids.event(("email", "ann@shop.de"))])

    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])

    assert (outcome.outcome, outcome.person_id) == (Outcome.UNCHANGED, first.person_id)
    assert [(r.position, r.reason) for r in outcome.refusals] == [(1, RefusalReason.LIMIT_EXCEEDED)]


def test_a_person_seen_twice_in_a_batch_keeps_the_latest_sighting(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    later = T0 + timedelta(days=2)
    first, _ = engine.ingest(
        [ids.event(("email", "ann@shop.de"), at=later), ids.event(("email", "ann@shop.de"))]
    )
    person = store.read(lambda tx: tx.person(first.person_id or ""))
    assert person is not None
    assert (person.created_at, person.last_seen) == (later, later)


def test_kept_raw_identifiers_are_facts_of_the_identifier_category(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    # "identifier" is the category the policy engine activates kept raw identifiers by.
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    cluster = store.read(lambda tx: tx.cluster(outcome.person_id or ""))
    facts = store.read(
        lambda tx: tx.node_facts([n.node_id for n in cluster.nodes], FactKind.RAW_IDENTIFIER)
    )
    assert [(f.name, f.category) for f in facts] == [("email", IDENTIFIER_CATEGORY)]


def test_the_default_clock_is_timezone_aware() -> None:
    # Consent records and split persons are stamped with it; a naive time would not compare
    # with the aware times of everything else.
    assert _utcnow().tzinfo is UTC


def test_an_existing_identifier_seen_twice_in_a_batch_widens_to_both_sightings(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    (created,) = engine.ingest([ids.event(("email", "ann@shop.de"), at=T0)])
    engine.ingest(
        [
            ids.event(("email", "ann@shop.de"), at=T0 + timedelta(days=3)),
            ids.event(("email", "ann@shop.de"), at=T0 - timedelta(days=2)),
        ]
    )
    (node,) = store.read(lambda tx: tx.cluster(created.person_id or "")).nodes
    assert (node.first_seen, node.last_seen) == (T0 - timedelta(days=2), T0 + timedelta(days=3))


def test_an_outcome_counts_the_facts_stored_quarantined_and_the_consents_recorded(
    engine: ResolutionEngine, ids: Ids
) -> None:
    def fact(name: str, status: FactStatus) -> FactInput:
        return FactInput(FactKind.ATTRIBUTE, name, "location", T0, b'"x"', status)

    consent = ConsentInput("analytics", True, T0, ConsentSignal.DIRECT, "consent", "0" * 64)
    event = IdentityEvent(
        (ids("email", "ann@shop.de"),),
        "web",
        T0,
        (
            fact("city", FactStatus.ACTIVE),
            fact("zip", FactStatus.QUARANTINED),
            fact("street", FactStatus.QUARANTINED),
        ),
        (consent, consent),
    )
    (outcome,) = engine.ingest([event])
    counts = (
        outcome.facts_stored,
        outcome.facts_quarantined,
        outcome.facts_dropped,
        outcome.consents_recorded,
        outcome.consents_dropped,
    )
    assert counts == (1, 2, 0, 2, 0)
    (refused,) = engine.ingest([replace(event, identifiers=(ids("customer_id", "null"),))])
    assert refused.outcome is Outcome.REFUSED
    assert (refused.facts_dropped, refused.consents_dropped) == (3, 2)


def test_facts_without_a_vault_are_refused_before_anything_is_written(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids
) -> None:
    fact = FactInput(FactKind.ATTRIBUTE, "city", "location", T0, b'"x"')
    event = IdentityEvent((ids("email", "ann@shop.de"),), "web", T0, (fact,))
    with pytest.raises(ConfigurationError) as raised:
        ResolutionEngine(store, keyring, policy).ingest([event])
    assert str(raised.value) == "facts need a sealer (the vault); none is configured"
    assert store.stats().identifiers == 0

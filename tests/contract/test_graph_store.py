"""The GraphStore contract: every backend must pass every test here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from identity.errors import IdGraphError, StoreUnavailableError
from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    IdentifierNode,
    Link,
    PersonRecord,
    Refusal,
    RefusalReason,
    StoreStats,
)
from identity.store.port import GraphStore, GraphTransaction

from .conftest import StoreFactory

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


def _hash(type_: str, n: int, key_id: str = "k1") -> HashedIdentifier:
    return HashedIdentifier(type_, key_id, n.to_bytes(32, "big"))


def _node(node_id: str, type_: str, n: int, person: str, at: datetime = T0) -> IdentifierNode:
    return IdentifierNode(node_id, _hash(type_, n), person, at, at)


def _seed(store: GraphStore) -> None:
    """Person p1: n1(email) - n2(phone) - n3(cookie); person p2: n4(email)."""
    store.write(
        lambda tx: tx.apply(
            ChangeSet(
                new_persons=(PersonRecord("p1", T0, T0), PersonRecord("p2", T0, T0)),
                new_nodes=(
                    _node("n1", "email", 1, "p1"),
                    _node("n2", "phone", 2, "p1"),
                    _node("n3", "cookie_id", 3, "p1"),
                    _node("n4", "email", 4, "p2"),
                ),
                links=(Link("n1", "n2", "web", T0, T0), Link("n2", "n3", "app", T0, T0)),
            )
        )
    )


def test_find_identifiers_returns_matching_nodes_when_present(store: GraphStore) -> None:
    _seed(store)
    found = store.read(
        lambda tx: tx.find_identifiers([_hash("email", 1), _hash("email", 99), _hash("phone", 2)])
    )
    assert sorted(n.node_id for n in found) == ["n1", "n2"]
    node = next(n for n in found if n.node_id == "n1")
    assert node.person_id == "p1"
    assert node.hashed == _hash("email", 1)
    assert node.first_seen == T0


def test_find_identifiers_matches_type_and_key_id_not_only_digest(store: GraphStore) -> None:
    _seed(store)
    assert store.read(lambda tx: tx.find_identifiers([_hash("phone", 1)])) == []
    assert store.read(lambda tx: tx.find_identifiers([_hash("email", 1, "k2")])) == []


def test_find_identifiers_handles_more_candidates_than_one_statement_takes(
    store: GraphStore,
) -> None:
    _seed(store)
    candidates = [_hash("email", n) for n in range(5, 2505)] + [_hash("email", 4)]
    assert [n.node_id for n in store.read(lambda tx: tx.find_identifiers(candidates))] == ["n4"]


def test_type_counts_counts_identifiers_per_person_and_type(store: GraphStore) -> None:
    _seed(store)
    counts = store.read(lambda tx: tx.type_counts(["p1", "p2", "nobody"]))
    assert counts == {"p1": {"email": 1, "phone": 1, "cookie_id": 1}, "p2": {"email": 1}}


def test_cluster_returns_only_the_persons_nodes_and_links(store: GraphStore) -> None:
    _seed(store)
    cluster = store.read(lambda tx: tx.cluster("p1"))
    assert cluster.person_id == "p1"
    assert sorted(n.node_id for n in cluster.nodes) == ["n1", "n2", "n3"]
    assert sorted((x.a, x.b, x.source) for x in cluster.links) == [
        ("n1", "n2", "web"),
        ("n2", "n3", "app"),
    ]
    assert store.read(lambda tx: tx.cluster("nobody")).nodes == ()


def test_links_upsert_widens_the_time_window_per_source(store: GraphStore) -> None:
    _seed(store)
    store.write(
        lambda tx: tx.apply(
            ChangeSet(
                links=(
                    Link("n1", "n2", "web", T1, T2),
                    Link("n1", "n2", "crm", T1, T1),
                )
            )
        )
    )
    links = {(x.a, x.b, x.source): x for x in store.read(lambda tx: tx.cluster("p1")).links}
    assert links[("n1", "n2", "web")].first_at == T0
    assert links[("n1", "n2", "web")].last_at == T2
    assert links[("n1", "n2", "crm")].first_at == T1


def test_remove_links_removes_every_source_in_either_order(store: GraphStore) -> None:
    _seed(store)
    store.write(lambda tx: tx.apply(ChangeSet(links=(Link("n1", "n2", "crm", T1, T1),))))
    assert store.write(lambda tx: tx.remove_links("n2", "n1")) == 2
    assert store.write(lambda tx: tx.remove_links("n1", "n2")) == 0
    remaining = store.read(lambda tx: tx.cluster("p1")).links
    assert [(x.a, x.b) for x in remaining] == [("n2", "n3")]


def test_merge_moves_every_node_and_removes_the_absorbed_person(store: GraphStore) -> None:
    _seed(store)
    store.write(
        lambda tx: tx.apply(
            ChangeSet(merged={"p2": "p1"}, links=(Link("n1", "n4", "crm", T1, T1),))
        )
    )
    cluster = store.read(lambda tx: tx.cluster("p1"))
    assert sorted(n.node_id for n in cluster.nodes) == ["n1", "n2", "n3", "n4"]
    assert store.read(lambda tx: tx.cluster("p2")).nodes == ()
    assert store.stats().persons == 1


def test_reassign_moves_single_nodes_to_a_new_person(store: GraphStore) -> None:
    _seed(store)
    store.write(lambda tx: tx.remove_links("n2", "n3"))
    store.write(
        lambda tx: tx.apply(
            ChangeSet(new_persons=(PersonRecord("p3", T1, T1),), reassigned={"n3": "p3"})
        )
    )
    assert [n.node_id for n in store.read(lambda tx: tx.cluster("p3")).nodes] == ["n3"]
    assert sorted(n.node_id for n in store.read(lambda tx: tx.cluster("p1")).nodes) == ["n1", "n2"]


def test_touch_widens_seen_window_and_rehash_replaces_the_digest(store: GraphStore) -> None:
    _seed(store)
    new_hash = HashedIdentifier("email", "k2", b"\x07" * 32)
    store.write(
        lambda tx: tx.apply(
            ChangeSet(
                touched={"n1": (T0 - timedelta(days=1), T2)},
                rehashed={"n1": new_hash},
                persons_seen={"p1": T2},
            )
        )
    )
    assert store.read(lambda tx: tx.find_identifiers([_hash("email", 1)])) == []
    (node,) = store.read(lambda tx: tx.find_identifiers([new_hash]))
    assert node.node_id == "n1"
    assert node.first_seen == T0 - timedelta(days=1)
    assert node.last_seen == T2


def test_refusals_are_recorded(store: GraphStore) -> None:
    refusal = Refusal(_hash("email", 9), RefusalReason.BLOCKED_PATTERN, "blocked", "web", T0)
    store.write(lambda tx: tx.apply(ChangeSet(refusals=(refusal, refusal))))
    assert store.stats() == StoreStats(persons=0, identifiers=0, links=0, refusals=2)


def test_write_rolls_back_everything_when_the_function_raises(store: GraphStore) -> None:
    _seed(store)
    before = store.stats()

    def half_then_fail(tx: GraphTransaction) -> None:
        tx.apply(
            ChangeSet(
                new_persons=(PersonRecord("p9", T1, T1),),
                new_nodes=(_node("n9", "email", 9, "p9"),),
            )
        )
        tx.remove_links("n1", "n2")
        raise RuntimeError("injected failure after a partial write")

    with pytest.raises(RuntimeError, match="injected"):
        store.write(half_then_fail)
    assert store.stats() == before
    assert store.read(lambda tx: tx.find_identifiers([_hash("email", 9)])) == []


def test_duplicate_identifier_is_refused_and_nothing_is_written(store: GraphStore) -> None:
    _seed(store)
    before = store.stats()
    duplicate = ChangeSet(
        new_persons=(PersonRecord("p9", T1, T1),),
        new_nodes=(_node("n9", "email", 1, "p9"),),  # same (type, key, digest) as n1
    )
    with pytest.raises(IdGraphError):
        store.write(lambda tx: tx.apply(duplicate))
    assert store.stats() == before


def test_data_survives_reopening_the_store(store_factory: StoreFactory) -> None:
    first = store_factory()
    _seed(first)
    first.close()
    second = store_factory()
    try:
        assert second.stats() == StoreStats(persons=2, identifiers=4, links=2, refusals=0)
        assert [
            n.node_id for n in second.read(lambda tx: tx.find_identifiers([_hash("email", 4)]))
        ] == ["n4"]
    finally:
        second.close()


def test_ping_succeeds_on_an_open_store_and_fails_on_a_closed_one(
    store_factory: StoreFactory,
) -> None:
    opened = store_factory()
    opened.ping()  # answers without raising
    opened.close()
    with pytest.raises(StoreUnavailableError):
        opened.ping()

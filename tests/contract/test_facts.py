"""The GraphStore contract for facts: every backend must pass every test here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    PersonRecord,
)
from identity.store.port import GraphStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
ACTIVE = FactStatus.ACTIVE
QUARANTINED = FactStatus.QUARANTINED


def _fact(
    fact_id: str,
    node: str,
    kind: FactKind = FactKind.ATTRIBUTE,
    name: str = "city",
    at: datetime = T0,
    status: FactStatus = ACTIVE,
    sealed: bytes = b"\x01cipher",
) -> Fact:
    return Fact(fact_id, node, kind, name, "location", at, "web", status, sealed, ("PERSON",))


def _seed(store: GraphStore, *facts: Fact) -> None:
    store.write(
        lambda tx: tx.apply(
            ChangeSet(
                new_persons=(PersonRecord("p1", T0, T0), PersonRecord("p2", T0, T0)),
                new_nodes=(
                    IdentifierNode(
                        "n1", HashedIdentifier("email", "k1", b"\x01" * 32), "p1", T0, T0
                    ),
                    IdentifierNode(
                        "n2", HashedIdentifier("phone", "k1", b"\x02" * 32), "p1", T0, T0
                    ),
                    IdentifierNode(
                        "n3", HashedIdentifier("email", "k2", b"\x03" * 32), "p2", T0, T0
                    ),
                ),
                facts=facts,
            )
        )
    )


def test_person_facts_come_from_every_node_of_the_person(store: GraphStore) -> None:
    _seed(
        store,
        _fact("f1", "n1"),
        _fact("f2", "n2", FactKind.EVENT, "purchase", T1),
        _fact("f3", "n3"),
        _fact("f4", "n2", FactKind.EVENT, "purchase", T0, QUARANTINED),
    )
    facts = store.read(
        lambda tx: tx.person_facts("p1", (FactKind.ATTRIBUTE, FactKind.EVENT), ACTIVE)
    )
    assert [f.fact_id for f in facts] == ["f1", "f2"]  # oldest first; quarantined hidden
    assert facts[0].sealed == b"\x01cipher"
    assert facts[0].pii == ("PERSON",)
    assert facts[1].at == T1
    only_events = store.read(lambda tx: tx.person_facts("p1", (FactKind.EVENT,), ACTIVE))
    assert [f.fact_id for f in only_events] == ["f2"]


def test_a_newer_attribute_replaces_the_current_value_and_an_older_one_is_ignored(
    store: GraphStore,
) -> None:
    _seed(store, _fact("f1", "n1", sealed=b"old"))
    newer = _fact("f2", "n1", at=T1, sealed=b"new")
    older = _fact("f3", "n1", at=T0 - timedelta(days=1), sealed=b"stale")
    store.write(lambda tx: tx.apply(ChangeSet(facts=(newer,))))
    store.write(lambda tx: tx.apply(ChangeSet(facts=(older,))))
    (current,) = store.read(lambda tx: tx.person_facts("p1", (FactKind.ATTRIBUTE,), ACTIVE))
    assert current.sealed == b"new"
    assert current.at == T1
    assert store.stats().facts == 1


def test_events_and_quarantined_attributes_are_appended(store: GraphStore) -> None:
    _seed(
        store,
        _fact("f1", "n1", FactKind.EVENT, "purchase"),
        _fact("f2", "n1", FactKind.EVENT, "purchase"),
        _fact("f3", "n1", status=QUARANTINED),
        _fact("f4", "n1", status=QUARANTINED),
    )
    assert store.stats().facts == 4


def test_one_raw_identifier_per_node(store: GraphStore) -> None:
    raw = FactKind.RAW_IDENTIFIER
    _seed(store, _fact("f1", "n1", raw, "email", sealed=b"a"))
    store.write(
        lambda tx: tx.apply(ChangeSet(facts=(_fact("f2", "n1", raw, "email", T1, sealed=b"b"),)))
    )
    (kept,) = store.read(lambda tx: tx.node_facts(["n1", "n2"], raw))
    assert kept.sealed == b"b"
    assert kept.node_id == "n1"


def test_quarantine_listing_release_and_delete(store: GraphStore) -> None:
    _seed(
        store,
        _fact("f1", "n1", status=QUARANTINED),
        _fact("f2", "n2", FactKind.EVENT, "x", status=QUARANTINED),
        _fact("f3", "n3"),
    )
    first = store.read(lambda tx: tx.facts_page(QUARANTINED, "", 1))
    rest = store.read(lambda tx: tx.facts_page(QUARANTINED, first[-1].fact_id, 10))
    assert [f.fact_id for f in first + rest] == ["f1", "f2"]
    assert store.write(lambda tx: tx.set_fact_status(["f2"], ACTIVE)) == 1
    visible = store.read(lambda tx: tx.person_facts("p1", (FactKind.EVENT,), ACTIVE))
    assert [f.fact_id for f in visible] == ["f2"]
    assert store.write(lambda tx: tx.delete_facts(["f1", "nope"])) == 1
    assert store.read(lambda tx: tx.facts_page(QUARANTINED, "", 10)) == []


def test_facts_follow_their_node_into_a_merged_person(store: GraphStore) -> None:
    _seed(store, _fact("f1", "n3"))
    store.write(lambda tx: tx.apply(ChangeSet(merged={"p2": "p1"})))
    facts = store.read(lambda tx: tx.person_facts("p1", (FactKind.ATTRIBUTE,), ACTIVE))
    assert [f.fact_id for f in facts] == ["f1"]


def test_identifiers_page_lists_nodes_under_other_keys(store: GraphStore) -> None:
    _seed(store)
    page = store.read(lambda tx: tx.identifiers_page("k1", "", 10))
    assert [n.node_id for n in page] == ["n3"]
    assert store.read(lambda tx: tx.identifiers_page("k2", "n1", 10))[0].node_id == "n2"


def test_existing_nodes_names_only_the_node_ids_the_graph_holds(store: GraphStore) -> None:
    _seed(store)
    wanted = ["n1", "n3", "n_never_written", "n2"]
    assert store.read(lambda tx: tx.existing_nodes(wanted)) == {"n1", "n2", "n3"}
    assert store.read(lambda tx: tx.existing_nodes([])) == set()

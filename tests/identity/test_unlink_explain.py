"""Unlink splits clusters (facts stay with their anchors); explain returns the path of links."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest

from identity.errors import IdentifierNotFoundError, NotLinkedError
from identity.model import Cluster, Explanation
from identity.resolution import ResolutionEngine
from identity.store.port import GraphTransaction
from identity.store.sqlite import SqliteGraphStore
from tests.conftest import T0, Ids


def _cluster(tx: GraphTransaction, person: str) -> Cluster:
    return tx.cluster(person)


def _two_halves(engine: ResolutionEngine, ids: Ids) -> None:
    """email - cookie c1 (web), phone - cookie c2 (app), then email - phone (crm) joins them."""
    engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"), source="web", at=T0)])
    engine.ingest(
        [
            ids.event(
                ("phone", "+442079460958"),
                ("cookie_id", "c2"),
                source="app",
                at=T0 + timedelta(days=1),
            )
        ]
    )
    engine.ingest(
        [
            ids.event(
                ("email", "ann@shop.de"),
                ("phone", "+442079460958"),
                source="crm",
                at=T0 + timedelta(days=2),
            )
        ]
    )


def test_explain_returns_the_chain_of_links_with_sources_and_times(
    engine: ResolutionEngine, ids: Ids
) -> None:
    _two_halves(engine, ids)
    result = engine.explain(ids("cookie_id", "c1"), ids("cookie_id", "c2"))
    assert result.linked
    assert [(h.from_type, h.to_type) for h in result.hops] == [
        ("cookie_id", "email"),
        ("email", "phone"),
        ("phone", "cookie_id"),
    ]
    assert [h.sources for h in result.hops] == [("web",), ("crm",), ("app",)]
    assert result.hops[1].first_linked_at == T0 + timedelta(days=2)
    # consecutive hops share their node
    assert all(a.to_node == b.from_node for a, b in zip(result.hops, result.hops[1:], strict=False))


def test_explain_says_not_linked_for_different_persons(engine: ResolutionEngine, ids: Ids) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de")), ids.event(("email", "bob@shop.de"))])
    result = engine.explain(ids("email", "ann@shop.de"), ids("email", "bob@shop.de"))
    assert not result.linked
    assert result.hops == ()


def test_explain_names_the_unknown_identifier(engine: ResolutionEngine, ids: Ids) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de"))])
    with pytest.raises(IdentifierNotFoundError) as caught:
        engine.explain(ids("email", "ann@shop.de"), ids("email", "nobody@shop.de"))
    assert caught.value.field == "b"
    with pytest.raises(IdentifierNotFoundError) as caught:
        engine.explain(ids("email", "nobody@shop.de"), ids("email", "ann@shop.de"))
    assert caught.value.field == "a"


def test_unlink_splits_the_cluster_and_each_part_keeps_its_own_facts(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    _two_halves(engine, ids)
    person = engine.resolve(ids("email", "ann@shop.de"))
    assert person is not None
    seen_before = {
        n.node_id: (n.first_seen, n.last_seen)
        for n in store.read(lambda tx: tx.cluster(person)).nodes
    }

    result = engine.unlink(ids("email", "ann@shop.de"), ids("phone", "+442079460958"))

    assert result.split
    assert result.removed_links == 1
    email_person = engine.resolve(ids("email", "ann@shop.de"))
    phone_person = engine.resolve(ids("phone", "+442079460958"))
    assert email_person == engine.resolve(ids("cookie_id", "c1")) == result.person_id_a
    assert phone_person == engine.resolve(ids("cookie_id", "c2")) == result.person_id_b
    assert email_person != phone_person
    assert store.stats().persons == 2
    # Facts anchored to each identifier (its sightings and links) moved with it, unchanged.
    after = {}
    for part in (email_person or "", phone_person or ""):
        cluster = store.read(partial(_cluster, person=part))
        assert len(cluster.nodes) == 2
        assert len(cluster.links) == 1
        after.update({n.node_id: (n.first_seen, n.last_seen) for n in cluster.nodes})
    assert after == seen_before
    email_part = store.read(lambda tx: tx.cluster(email_person or ""))
    assert {x.source for x in email_part.links} == {"web"}


def test_unlink_without_split_when_another_path_remains(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    _two_halves(engine, ids)
    engine.ingest([ids.event(("cookie_id", "c1"), ("cookie_id", "c2"), source="web")])
    result = engine.unlink(ids("email", "ann@shop.de"), ids("phone", "+442079460958"))
    assert not result.split
    assert result.person_id_a == result.person_id_b
    assert store.stats().persons == 1


def test_unlink_refuses_identifiers_linked_only_through_others(
    engine: ResolutionEngine, ids: Ids
) -> None:
    _two_halves(engine, ids)
    with pytest.raises(NotLinkedError, match="explain"):
        engine.unlink(ids("cookie_id", "c1"), ids("cookie_id", "c2"))


def test_unlink_refuses_identifiers_of_different_persons(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    engine.ingest([ids.event(("email", "ann@shop.de")), ids.event(("email", "bob@shop.de"))])
    before = store.stats()
    with pytest.raises(NotLinkedError):
        engine.unlink(ids("email", "ann@shop.de"), ids("email", "bob@shop.de"))
    assert store.stats() == before


def test_relinking_after_unlink_merges_again(engine: ResolutionEngine, ids: Ids) -> None:
    _two_halves(engine, ids)
    engine.unlink(ids("email", "ann@shop.de"), ids("phone", "+442079460958"))
    engine.ingest([ids.event(("cookie_id", "c1"), ("cookie_id", "c2"))])
    assert engine.resolve(ids("cookie_id", "c1")) == engine.resolve(ids("phone", "+442079460958"))


# Removes a link row through the SQLite connection to build a person without a path.
@pytest.mark.sqlite_only
def test_explain_reports_a_person_without_a_path_honestly(
    engine: ResolutionEngine, ids: Ids, store: SqliteGraphStore
) -> None:
    # A store inconsistency (links lost, nodes still on one person): explain says "not linked"
    # and names the person, instead of inventing a path or failing.
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    store.write(lambda tx: tx._conn.execute("DELETE FROM links"))

    explanation = engine.explain(ids("email", "ann@shop.de"), ids("cookie_id", "c1"))

    assert explanation == Explanation(False, outcome.person_id, ())


def test_explain_names_the_person_of_a_path_and_no_person_across_persons(
    engine: ResolutionEngine, ids: Ids
) -> None:
    (outcome,) = engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"))])
    engine.ingest([ids.event(("email", "bob@shop.de"))])

    linked = engine.explain(ids("email", "ann@shop.de"), ids("cookie_id", "c1"))
    apart = engine.explain(ids("email", "ann@shop.de"), ids("email", "bob@shop.de"))

    assert (linked.linked, linked.person_id, len(linked.hops)) == (True, outcome.person_id, 1)
    assert apart == Explanation(False, None, ())


def test_unlink_gives_the_smaller_part_a_new_person_whichever_side_it_is_named_on(
    engine: ResolutionEngine, ids: Ids
) -> None:
    # email - c1 (web); phone - c2, phone - c3 (app); email - phone (crm). Unlinking email and
    # phone leaves {email, c1} and {phone, c2, c3}: the larger part keeps the person.
    engine.ingest([ids.event(("email", "ann@shop.de"), ("cookie_id", "c1"), source="web")])
    engine.ingest([ids.event(("phone", "+442079460958"), ("cookie_id", "c2"), ("cookie_id", "c3"))])
    (joined,) = engine.ingest(
        [ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"), source="crm")]
    )

    result = engine.unlink(ids("email", "ann@shop.de"), ids("phone", "+442079460958"))

    assert result.split
    assert result.person_id_b == joined.person_id == engine.resolve(ids("cookie_id", "c3"))
    assert result.person_id_a != joined.person_id
    assert result.person_id_a == engine.resolve(ids("cookie_id", "c1"))


def test_unlink_refusals_say_why_in_words(engine: ResolutionEngine, ids: Ids) -> None:
    _two_halves(engine, ids)
    engine.ingest([ids.event(("email", "bob@shop.de"))])
    with pytest.raises(NotLinkedError) as apart:
        engine.unlink(ids("email", "ann@shop.de"), ids("email", "bob@shop.de"))
    with pytest.raises(NotLinkedError) as indirect:
        engine.unlink(ids("cookie_id", "c1"), ids("cookie_id", "c2"))
    # These messages are the API's problem detail: pinned word for word.
    assert str(apart.value) == "the two identifiers belong to different persons"
    assert str(indirect.value) == (
        "the two identifiers are linked only through others; use explain to see the path"
    )

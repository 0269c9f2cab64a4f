"""Sticky unlink (issue 13, finding 9): an unlink records a do-not-link rule, resolution honours
it on every backend, explain shows it, erasure deletes it. SQLite always; Neo4j with NEO4J_URI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from identity.errors import RuleNotFoundError
from identity.model import IdentityEvent, Outcome, RefusalReason
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore
from tests.conftest import Ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ANN, PHONE = ("email", "ann@dnl.example"), ("phone", "+442079460958")


def _event(ids: Ids, *pairs: tuple[str, str], days: int = 0) -> IdentityEvent:
    return IdentityEvent(tuple(ids(t, v) for t, v in pairs), "web", T0 + timedelta(days=days))


def _split(engine: ResolutionEngine, ids: Ids) -> str:
    """ann + cookie c1 and phone + cookie c2, joined by ann-phone, then unlinked: the rule id."""
    engine.ingest([_event(ids, ANN, ("cookie_id", "c1"))])
    engine.ingest([_event(ids, PHONE, ("cookie_id", "c2"), days=1)])
    engine.ingest([_event(ids, ANN, PHONE, days=2)])
    result = engine.unlink(ids(*ANN), ids(*PHONE))
    assert result.split
    assert result.rule_id is not None
    return result.rule_id


def test_the_next_event_naming_both_unlinked_identifiers_does_not_merge_them(
    engine: ResolutionEngine, ids: Ids, store: GraphStore
) -> None:
    _split(engine, ids)
    before = store.stats()
    (outcome,) = engine.ingest([_event(ids, ANN, PHONE, days=3)])
    # The email outranks the phone, so the phone is the one refused; the email side is touched.
    assert outcome.outcome is Outcome.UNCHANGED
    assert [(r.hashed.type, r.reason) for r in outcome.refusals] == [
        ("phone", RefusalReason.DO_NOT_LINK)
    ]
    assert engine.resolve(ids(*ANN)) != engine.resolve(ids(*PHONE))
    after = store.stats()
    assert (after.persons, after.links) == (before.persons, before.links)
    assert after.refusals == before.refusals + 1  # recorded, keyed hash only


def test_the_rule_also_holds_through_other_identifiers_of_either_side(
    engine: ResolutionEngine, ids: Ids
) -> None:
    _split(engine, ids)
    (outcome,) = engine.ingest([_event(ids, ("cookie_id", "c1"), ("cookie_id", "c2"), days=3)])
    assert [r.reason for r in outcome.refusals] == [RefusalReason.DO_NOT_LINK]
    # And in one batch: the first event merges a third person into ann's side, the second then
    # tries to join that merged person to the phone side.
    outcomes = engine.ingest(
        [
            _event(ids, ("cookie_id", "c1"), ("email", "new@dnl.example"), days=4),
            _event(ids, ("email", "new@dnl.example"), ("cookie_id", "c2"), days=4),
        ]
    )
    assert [r.reason for r in outcomes[1].refusals] == [RefusalReason.DO_NOT_LINK]
    assert engine.resolve(ids(*ANN)) != engine.resolve(ids(*PHONE))
    # Linking new identifiers to either side is not affected.
    (linked,) = engine.ingest([_event(ids, PHONE, ("cookie_id", "c3"), days=5)])
    assert linked.outcome is Outcome.LINKED
    assert linked.refusals == ()


def test_explain_shows_the_rule_that_keeps_two_identifiers_apart(
    engine: ResolutionEngine, ids: Ids
) -> None:
    rule_id = _split(engine, ids)
    explanation = engine.explain(ids(*ANN), ids(*PHONE))
    assert not explanation.linked
    assert [e.rule.rule_id for e in explanation.do_not_link] == [rule_id]
    (entry,) = explanation.do_not_link
    assert {entry.type_a, entry.type_b} == {"email", "phone"}
    # Across the two persons, through other identifiers, it is the same rule.
    other = engine.explain(ids("cookie_id", "c1"), ids("cookie_id", "c2"))
    assert [e.rule.rule_id for e in other.do_not_link] == [rule_id]


def test_rules_are_listed_and_removed_by_id_and_removal_allows_linking_again(
    engine: ResolutionEngine, ids: Ids
) -> None:
    rule_id = _split(engine, ids)
    (listed,) = engine.do_not_link_page("", 10)
    assert listed.rule.rule_id == rule_id
    assert listed.person_a != listed.person_b
    assert engine.do_not_link_page(rule_id, 10) == []
    removed = engine.remove_do_not_link(rule_id)
    assert removed.rule == listed.rule
    assert engine.do_not_link_page("", 10) == []
    with pytest.raises(RuleNotFoundError):
        engine.remove_do_not_link(rule_id)
    (merged,) = engine.ingest([_event(ids, ANN, PHONE, days=3)])
    assert merged.outcome is Outcome.MERGED
    assert engine.resolve(ids(*ANN)) == engine.resolve(ids(*PHONE))


def test_a_second_unlink_of_the_same_pair_keeps_one_rule(
    engine: ResolutionEngine, ids: Ids, store: GraphStore
) -> None:
    rule_id = _split(engine, ids)
    engine.remove_do_not_link(rule_id)
    engine.ingest([_event(ids, ANN, PHONE, days=3)])
    again = engine.unlink(ids(*ANN), ids(*PHONE))
    assert again.rule_id is not None
    assert again.rule_id != rule_id
    assert [e.rule.rule_id for e in engine.do_not_link_page("", 10)] == [again.rule_id]


def test_an_unlink_that_leaves_one_person_records_no_rule(
    engine: ResolutionEngine, ids: Ids
) -> None:
    engine.ingest([_event(ids, ANN, PHONE), _event(ids, ANN, ("cookie_id", "c1"))])
    engine.ingest([_event(ids, PHONE, ("cookie_id", "c1"))])
    result = engine.unlink(ids(*ANN), ids(*PHONE))
    assert not result.split
    assert result.rule_id is None
    assert engine.do_not_link_page("", 10) == []


def test_erasing_a_person_deletes_the_rules_naming_its_nodes(
    engine: ResolutionEngine, ids: Ids, store: GraphStore
) -> None:
    _split(engine, ids)
    person = engine.resolve(ids(*PHONE))
    assert person is not None
    counts = store.write(lambda tx: tx.erase_person(person))
    assert counts.do_not_link == 1
    assert engine.do_not_link_page("", 10) == []
    ann = engine.resolve(ids(*ANN))
    assert ann is not None
    assert store.read(lambda tx: tx.do_not_link_rules([ann])) == []

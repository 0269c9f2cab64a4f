"""The GraphStore contract for consent records, person reads and member scans.

Every backend must pass every test here. Graphs are built through the resolution engine, as the
service builds them: consents and facts arrive with events and are anchored to the event's hub.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from identity.errors import IdGraphError
from identity.hashing import Keyring
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    ConsentExclusion,
    ConsentInput,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    MemberRow,
    MemberScan,
    MemberScanPage,
    consent_grant,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.keys.vault import Vault
from tests.conftest import Ids

from .conftest import StoreFactory

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PROOF = "ab" * 32  # a SHA-256 hex digest of a signal


def _minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def _ticking_clock() -> Callable[[], datetime]:
    """A clock one second further on every call: recorded_at differs per ingest batch."""
    ticks = itertools.count()
    return lambda: T0 + timedelta(days=30, seconds=next(ticks))


@pytest.fixture
def engine(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault
) -> ResolutionEngine:
    """The engine on the parametrized backend, with a ticking clock and the real vault."""
    return ResolutionEngine(store, keyring, policy, clock=_ticking_clock(), sealer=vault)


# ingest(("email", "ann@shop.de"), consents=..., facts=..., at=..., source=...) -> person id
Ingest = Callable[..., str]
ConsentsOf = Callable[[str, list[str]], list[ConsentRecord]]


@pytest.fixture
def ingest(engine: ResolutionEngine, ids: Ids) -> Ingest:
    """:func:`_ingest` on the parametrized backend's engine: one event, its person's id."""
    return partial(_ingest, engine, ids)


IngestOn = Callable[..., Ingest]


@pytest.fixture
def ingest_on(keyring: Keyring, policy: IdentityPolicy, vault: Vault, ids: Ids) -> IngestOn:
    """``ingest_on(store, clock)``: :func:`_ingest` through an engine of its own on another open
    store (a second connection, a store opened again), ticking clock unless given."""

    def bind(store: GraphStore, clock: Callable[[], datetime] | None = None) -> Ingest:
        engine = ResolutionEngine(
            store, keyring, policy, clock=clock or _ticking_clock(), sealer=vault
        )
        return partial(_ingest, engine, ids)

    return bind


@pytest.fixture
def consents_of(store: GraphStore) -> ConsentsOf:
    """``person_consents`` of a person for some purposes, read in a transaction of its own."""

    def read(person: str, purposes: list[str]) -> list[ConsentRecord]:
        return store.read(lambda tx: tx.person_consents(person, purposes))

    return read


def _consent(
    purpose: str,
    granted: bool = True,
    at: datetime = T0,
    signal: ConsentSignal = ConsentSignal.DIRECT,
) -> ConsentInput:
    return ConsentInput(purpose, granted, at, signal, "consent", PROOF)


def _event(name: str, at: datetime, status: FactStatus = FactStatus.ACTIVE) -> FactInput:
    return FactInput(FactKind.EVENT, name, "behavioural", at, b'{"n": 1}', status)


def _attribute(name: str, at: datetime, status: FactStatus = FactStatus.ACTIVE) -> FactInput:
    return FactInput(FactKind.ATTRIBUTE, name, "location", at, b'"Lisbon"', status)


def _ingest(
    engine: ResolutionEngine,
    ids: Ids,
    *pairs: tuple[str, str],
    consents: tuple[ConsentInput, ...] = (),
    facts: tuple[FactInput, ...] = (),
    at: datetime = T0,
    source: str = "web",
) -> str:
    """Ingest one event; return the person it resolved to."""
    event = IdentityEvent(
        tuple(ids(t, v) for t, v in pairs), source, at, facts=facts, consents=consents
    )
    (outcome,) = engine.ingest([event])
    assert outcome.person_id is not None
    return outcome.person_id


def _purposes_and_times(records: list[ConsentRecord]) -> list[tuple[str, datetime, bool]]:
    return [(r.purpose, r.at, r.granted) for r in records]


def _pages(store: GraphStore, scan: MemberScan, limit: int) -> list[MemberScanPage]:
    """Every page of ``scan`` in order, each page in its own read transaction."""
    pages: list[MemberScanPage] = []
    after = ""

    def page(tx: GraphTransaction) -> MemberScanPage:
        return tx.member_page(scan, after, limit)

    while (found := store.read(page)).scanned:
        assert found.scanned <= limit
        assert found.scanned == len(found.rows) + sum(found.excluded.values())
        assert found.last_person_id > after
        pages.append(found)
        after = found.last_person_id
    return pages


def _scan_all(store: GraphStore, scan: MemberScan, limit: int) -> list[MemberRow]:
    """The rows of every page of ``scan`` in order."""
    return [row for page in _pages(store, scan, limit) for row in page.rows]


def _exclusions(store: GraphStore, scan: MemberScan) -> dict[str, ConsentExclusion | None]:
    """Each person ``scan`` selects, with the reason its consent filter left it out (``None``:
    a row), from pages of one person: a page names the last person it scanned."""
    found: dict[str, ConsentExclusion | None] = {}
    for page in _pages(store, scan, 1):
        if page.rows:
            assert (page.rows[0].person_id, page.excluded) == (page.last_person_id, {})
            found[page.last_person_id] = None
        else:
            ((reason, count),) = page.excluded.items()
            assert count == 1
            found[page.last_person_id] = reason
    return found


# -- consent records ------------------------------------------------------------------------------


def test_consent_records_are_stored_whole_and_survive_reopening_the_store(
    store_factory: StoreFactory, ingest_on: IngestOn
) -> None:
    first = store_factory()
    try:
        ingest = ingest_on(first, lambda: _minutes(90))
        tcf = ConsentInput("marketing", False, _minutes(5), ConsentSignal.TCF, "consent", PROOF)
        person = ingest(("email", "ann@shop.de"), consents=(tcf,), source="cmp:x")
        (stored,) = first.read(lambda tx: tx.person_consents(person, ["marketing"]))
    finally:
        first.close()
    assert stored.record_id.startswith("c_")
    assert (stored.purpose, stored.granted, stored.at, stored.recorded_at) == (
        "marketing",
        False,
        _minutes(5),
        _minutes(90),
    )
    assert (stored.source, stored.signal, stored.lawful_basis, stored.proof) == (
        "cmp:x",
        ConsentSignal.TCF,
        "consent",
        PROOF,
    )
    second = store_factory()
    try:
        assert second.read(lambda tx: tx.person_consents(person, ["marketing"])) == [stored]
        assert second.stats().consents == 1
    finally:
        second.close()


def test_person_consents_returns_asked_purposes_and_restrictions_in_decision_order(
    ingest: Ingest, consents_of: ConsentsOf, store: GraphStore
) -> None:
    email, phone = ("email", "ann@shop.de"), ("phone", "+442079460958")
    person = ingest(
        email,
        phone,
        consents=(
            _consent("marketing", True, _minutes(20)),
            _consent("analytics", True, _minutes(1)),
            _consent("marketing", False, _minutes(10)),
        ),
    )
    # A later batch (later recorded_at) with a decision at the same time as an earlier one,
    # anchored to the phone node, and a restriction of processing.
    ingest(
        phone,
        consents=(
            _consent("marketing", True, _minutes(10)),
            _consent(RESTRICTION_PURPOSE, False, _minutes(30), ConsentSignal.RESTRICTION),
            _consent("profiling", False, _minutes(2)),
        ),
    )
    records = consents_of(person, ["marketing"])
    assert _purposes_and_times(records) == [
        ("marketing", _minutes(10), False),
        ("marketing", _minutes(10), True),  # same at: the one recorded later comes later
        ("marketing", _minutes(20), True),
        (RESTRICTION_PURPOSE, _minutes(30), False),
    ]
    assert records[0].recorded_at < records[1].recorded_at
    both = consents_of(person, ["analytics", "profiling"])
    assert [r.purpose for r in both] == ["analytics", "profiling", RESTRICTION_PURPOSE]
    only_restriction = consents_of(person, [])
    assert [r.purpose for r in only_restriction] == [RESTRICTION_PURPOSE]
    assert consents_of("p_nobody", ["marketing"]) == []
    assert store.stats().consents == 6


def test_persons_consents_equals_person_consents_of_each_person_when_read_at_once(
    ingest: Ingest, consents_of: ConsentsOf, store: GraphStore
) -> None:
    ann = ingest(
        ("email", "ann@shop.de"),
        ("phone", "+442079460958"),
        consents=(
            _consent("marketing", True, _minutes(20)),
            _consent(RESTRICTION_PURPOSE, False, _minutes(30), ConsentSignal.RESTRICTION),
            _consent("marketing", False, _minutes(10)),
        ),
    )
    bob = ingest(("email", "bob@shop.de"), consents=(_consent("analytics", True, _minutes(1)),))
    cy = ingest(("email", "cy@shop.de"))  # no record at all
    asked = [ann, bob, cy, "p_nobody"]
    together = store.read(lambda tx: tx.persons_consents(asked, ["marketing"]))
    one_by_one = {person: consents_of(person, ["marketing"]) for person in asked}
    assert together == {p: records for p, records in one_by_one.items() if records}
    assert set(together) == {ann}  # bob's record is for another purpose
    assert [r.purpose for r in together[ann]] == ["marketing", "marketing", RESTRICTION_PURPOSE]
    assert store.read(lambda tx: tx.persons_consents([], ["marketing"])) == {}


def test_consent_records_with_equal_times_are_ordered_by_when_they_were_recorded(
    ingest: Ingest, consents_of: ConsentsOf, store: GraphStore
) -> None:
    # Six batches, each recording one decision taken at the same moment: the ticking clock
    # gives each batch a later recorded_at, and record ids are random, so only ordering by
    # recorded_at gives this order (by chance: 1 in 720).
    email = ("email", "ann@shop.de")
    person = ingest(email, consents=(_consent("marketing", True, _minutes(1)),))
    for n in range(1, 6):
        ingest(email, consents=(_consent("marketing", n % 2 == 0, _minutes(1)),))
    records = consents_of(person, ["marketing"])
    assert [r.granted for r in records] == [True, False, True, False, True, False]
    assert [r.recorded_at for r in records] == sorted({r.recorded_at for r in records})
    (row,) = _scan_all(store, MemberScan(consent_purposes=("marketing",)), 5)
    assert list(row.consents) == records


def test_consent_records_with_equal_times_are_ordered_by_record_id(
    ingest: Ingest, consents_of: ConsentsOf
) -> None:
    person = ingest(
        ("email", "ann@shop.de"),
        consents=tuple(_consent("marketing", n % 2 == 0, _minutes(1)) for n in range(6)),
    )
    records = consents_of(person, ["marketing"])
    assert len(records) == 6
    assert [r.record_id for r in records] == sorted(r.record_id for r in records)


def test_consent_records_follow_their_node_into_a_merged_person(
    ingest: Ingest, consents_of: ConsentsOf, store: GraphStore
) -> None:
    ann = ingest(("email", "ann@shop.de"), consents=(_consent("marketing"),))
    other = ingest(("cookie_id", "c-1"), consents=(_consent("analytics", at=_minutes(1)),))
    merged = ingest(("email", "ann@shop.de"), ("cookie_id", "c-1"))
    survivor, absorbed = (ann, other) if merged == ann else (other, ann)
    assert store.read(lambda tx: tx.person(absorbed)) is None
    records = consents_of(survivor, ["marketing", "analytics"])
    assert [r.purpose for r in records] == ["marketing", "analytics"]
    assert consents_of(absorbed, ["marketing", "analytics"]) == []
    assert store.stats().consents == 2


def test_consent_records_stay_with_their_own_part_when_an_unlink_splits_the_person(
    ingest: Ingest, consents_of: ConsentsOf, engine: ResolutionEngine, ids: Ids
) -> None:
    email, cookie = ("email", "ann@shop.de"), ("cookie_id", "c-1")
    ingest(email, cookie, consents=(_consent("marketing"),))  # on the email (hub)
    ingest(cookie, consents=(_consent("analytics"),))  # on the cookie
    result = engine.unlink(ids(*email), ids(*cookie))
    assert result.split
    purposes = ["marketing", "analytics"]
    email_part = consents_of(result.person_id_a, purposes)
    cookie_part = consents_of(result.person_id_b, purposes)
    assert [r.purpose for r in email_part] == ["marketing"]
    assert [r.purpose for r in cookie_part] == ["analytics"]


def test_a_consent_record_whose_node_does_not_exist_is_refused_and_nothing_is_written(
    store: GraphStore,
) -> None:
    orphan = ConsentRecord(
        "c_orphan",
        "n_missing",
        "marketing",
        True,
        T0,
        T0,
        "api",
        ConsentSignal.DIRECT,
        "consent",
        PROOF,
    )
    with pytest.raises(IdGraphError):
        store.write(lambda tx: tx.apply(ChangeSet(consents=(orphan,))))
    assert store.stats().consents == 0


def test_person_returns_the_record_or_none_when_missing(ingest: Ingest, store: GraphStore) -> None:
    person = ingest(("email", "ann@shop.de"), at=_minutes(3))
    ingest(("email", "ann@shop.de"), at=_minutes(9))
    record = store.read(lambda tx: tx.person(person))
    assert record is not None
    assert (record.person_id, record.created_at, record.last_seen) == (
        person,
        _minutes(3),
        _minutes(9),
    )
    assert store.read(lambda tx: tx.person("p_nobody")) is None


def test_person_read_equals_the_three_reads_of_one_transaction_when_read_at_once(
    ingest: Ingest, store: GraphStore
) -> None:
    email, phone = ("email", "ann@shop.de"), ("phone", "+442079460958")
    kinds = (FactKind.ATTRIBUTE, FactKind.EVENT)
    person = ingest(
        email,
        phone,
        consents=(_consent("marketing", True, _minutes(20)), _consent("analytics", False)),
        facts=(
            _attribute("city", _minutes(5)),
            _event("purchase", _minutes(7)),
            _event("purchase", _minutes(7)),  # same time: ordered by fact id
            _event("visit", _minutes(1), FactStatus.QUARANTINED),
        ),
    )
    # A later batch on the phone node: a decision at an equal time (ordered by recorded_at),
    # a restriction record, an attribute of the same name and an older event.
    ingest(
        phone,
        consents=(
            _consent("marketing", False, _minutes(20)),
            _consent(RESTRICTION_PURPOSE, False, _minutes(30), ConsentSignal.RESTRICTION),
        ),
        facts=(_attribute("city", _minutes(6)), _event("visit", _minutes(2))),
    )
    consentless = ingest(("email", "bob@shop.de"), facts=(_event("visit", T0),))

    def separately(tx: GraphTransaction, who: str, purposes: list[str]) -> tuple[Any, ...]:
        consents = tx.person_consents(who, purposes)
        return consents, tx.person_facts(who, kinds, FactStatus.ACTIVE)

    for who, purposes in ((person, ["marketing"]), (person, []), (consentless, ["marketing"])):
        rows = store.person_read(who, purposes, kinds, FactStatus.ACTIVE)
        assert rows is not None
        expected = store.read(partial(separately, who=who, purposes=purposes))
        assert (list(rows.consents), list(rows.facts)) == expected
    rows = store.person_read(person, ["marketing", "analytics"], kinds, FactStatus.ACTIVE)
    assert rows is not None
    assert [(r.purpose, r.granted) for r in rows.consents] == [
        ("analytics", False),
        ("marketing", True),
        ("marketing", False),
        (RESTRICTION_PURPOSE, False),
    ]
    assert [f.name for f in rows.facts] == ["visit", "city", "city", "purchase", "purchase"]
    quarantined = store.person_read(person, [], [FactKind.EVENT], FactStatus.QUARANTINED)
    assert quarantined is not None
    assert [(f.name, f.status) for f in quarantined.facts] == [("visit", FactStatus.QUARANTINED)]
    assert store.person_read("p_nobody", ["marketing"], kinds, FactStatus.ACTIVE) is None


# -- member scans ---------------------------------------------------------------------------------


def test_member_pages_cover_every_person_exactly_once_in_id_order(
    ingest: Ingest, store: GraphStore
) -> None:
    persons = {ingest(("email", f"user{n}@shop.de")) for n in range(11)}
    for limit in (1, 3, 11, 50):
        rows = _scan_all(store, MemberScan(), limit)
        assert [r.person_id for r in rows] == sorted(persons)
    empty = MemberScanPage((), 0, "", {})
    assert store.read(lambda tx: tx.member_page(MemberScan(), max(persons), 10)) == empty
    assert store.read(lambda tx: tx.member_page(MemberScan(), "", 0)) == empty
    first = store.read(lambda tx: tx.member_page(MemberScan(person_times=True), "", 1)).rows[0]
    record = store.read(lambda tx: tx.person(first.person_id))
    assert record is not None
    assert (first.created_at, first.last_seen) == (record.created_at, record.last_seen)
    assert (first.consents, first.attributes) == ((), ())
    # Not asked for: no times (an audience decides without them).
    lean = store.read(lambda tx: tx.member_page(MemberScan(), "", 1)).rows[0]
    assert (lean.person_id, lean.created_at, lean.last_seen) == (first.person_id, None, None)


def test_member_page_returns_person_times_only_when_asked_when_event_rules_select(
    ingest: Ingest, store: GraphStore
) -> None:
    buyer = ingest(
        ("email", "a@shop.de"),
        consents=(_consent("marketing", at=_minutes(4)),),
        facts=(_event("purchase", _minutes(5)),),
        at=_minutes(5),
    )
    ingest(("email", "a@shop.de"), at=_minutes(9))
    ingest(("email", "b@shop.de"), facts=(_event("refund", _minutes(6)),))
    rule = (EventCountRule("purchase", _minutes(1), 1),)
    for purposes, consent_filter in (((), None), (("marketing",), "marketing")):
        asked = MemberScan(rule, (), purposes, consent_filter, person_times=True)
        lean = MemberScan(rule, (), purposes, consent_filter)
        timed = _scan_all(store, asked, 10)
        untimed = _scan_all(store, lean, 10)
        assert [(r.person_id, r.created_at, r.last_seen) for r in timed] == [
            (buyer, _minutes(5), _minutes(9))
        ]
        assert [(r.person_id, r.created_at, r.last_seen) for r in untimed] == [(buyer, None, None)]
        assert [(r.consents, r.grant) for r in untimed] == [(r.consents, r.grant) for r in timed]
        assert _exclusions(store, lean) == _exclusions(store, asked)
        # Filtered on the one purpose it asks for, the buyer's grant instead of its record.
        assert len(untimed[0].consents) + (untimed[0].grant is not None) == len(purposes)


def test_member_page_event_rules_count_active_events_since_a_time_on_any_node(
    ingest: Ingest, store: GraphStore
) -> None:
    since = _minutes(100)
    quarantined = FactStatus.QUARANTINED
    # One event exactly at `since` (inclusive) and one on the cookie node, merged in later.
    two_on_two_nodes = ingest(("email", "a@shop.de"), facts=(_event("purchase", since),))
    ingest(("cookie_id", "a"), facts=(_event("purchase", _minutes(200)),))
    assert ingest(("email", "a@shop.de"), ("cookie_id", "a")) == two_on_two_nodes
    # One event just before `since`, one after.
    one_recent = ingest(
        ("email", "b@shop.de"),
        facts=(_event("purchase", since - timedelta(milliseconds=1)), _event("purchase", since)),
    )
    # Two recent events, but one is quarantined (invisible to reads).
    one_active = ingest(
        ("email", "c@shop.de"),
        facts=(_event("purchase", _minutes(150)), _event("purchase", _minutes(150), quarantined)),
    )
    # Two recent events of another name, and one recent page view.
    other_name = ingest(
        ("email", "d@shop.de"),
        facts=(
            _event("refund", _minutes(150)),
            _event("refund", _minutes(160)),
            _event("page_view", _minutes(150)),
        ),
    )

    def members(*rules: EventCountRule) -> set[str]:
        return {r.person_id for r in _scan_all(store, MemberScan(event_rules=rules), 2)}

    purchases = EventCountRule("purchase", since, 1)
    twice = EventCountRule("purchase", since, 2)
    viewed = EventCountRule("page_view", since, 1)
    assert members(purchases) == {two_on_two_nodes, one_recent, one_active}
    assert members(twice) == {two_on_two_nodes}
    assert members(EventCountRule("purchase", since + timedelta(milliseconds=1), 1)) == {
        two_on_two_nodes,
        one_active,
    }
    assert members(EventCountRule("refund", since, 2)) == {other_name}
    assert members(viewed) == {other_name}
    assert members(purchases, viewed) == set()  # AND, not OR
    assert members(EventCountRule("refund", since, 1), viewed) == {other_name}
    assert members(purchases, purchases) == members(purchases)
    assert members() == {two_on_two_nodes, one_recent, one_active, other_name}


def test_member_page_event_rules_see_writes_committed_between_pages(
    ingest: Ingest, ingest_on: IngestOn, store: GraphStore, store_factory: StoreFactory
) -> None:
    twice = MemberScan(event_rules=(EventCountRule("purchase", _minutes(100), 2),))

    def members() -> list[str]:
        return [r.person_id for r in _scan_all(store, twice, 1)]

    buyer = ingest(
        ("email", "a@shop.de"),
        facts=(_event("purchase", _minutes(150)), _event("purchase", _minutes(151))),
    )
    late = ingest(("email", "b@shop.de"), facts=(_event("purchase", _minutes(150)),))
    assert members() == [buyer]
    # A second event through the same store, then a new buyer through another connection (the
    # CLI ingesting while the API serves): the next scan sees both.
    ingest(("email", "b@shop.de"), facts=(_event("purchase", _minutes(160)),))
    assert members() == sorted([buyer, late])
    other = store_factory()
    try:
        third = ingest_on(other)(
            ("email", "c@shop.de"),
            facts=(_event("purchase", _minutes(170)), _event("purchase", _minutes(171))),
        )
    finally:
        other.close()
    assert members() == sorted([buyer, late, third])
    # A wider window than the scans before it (an earlier `since`) counts the older events too.
    wider = MemberScan(event_rules=(EventCountRule("purchase", _minutes(0), 1),))
    assert [r.person_id for r in _scan_all(store, wider, 2)] == sorted([buyer, late, third])


def test_member_page_returns_only_active_named_attributes_sealed(
    ingest: Ingest, store: GraphStore, vault: Vault
) -> None:
    quarantined = FactStatus.QUARANTINED
    person = ingest(
        ("email", "a@shop.de"),
        facts=(
            _attribute("city", _minutes(1)),
            _attribute("age_band", _minutes(1), quarantined),
            _attribute("interests", _minutes(1)),
            _event("city", _minutes(1)),  # an event of the same name is not an attribute
        ),
    )
    ingest(("cookie_id", "a"), facts=(_attribute("age_band", _minutes(2)),))
    ingest(("email", "a@shop.de"), ("cookie_id", "a"))
    (row,) = _scan_all(store, MemberScan(attribute_names=("city", "age_band")), 10)
    assert row.person_id == person
    assert sorted((f.name, f.kind, f.status) for f in row.attributes) == [
        ("age_band", FactKind.ATTRIBUTE, FactStatus.ACTIVE),
        ("city", FactKind.ATTRIBUTE, FactStatus.ACTIVE),
    ]
    opened = vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in row.attributes])
    assert opened == [b'"Lisbon"', b'"Lisbon"']
    (bare,) = _scan_all(store, MemberScan(), 10)
    assert bare.attributes == ()


def test_member_page_returns_consents_only_for_asked_purposes_and_restrictions(
    ingest: Ingest, consents_of: ConsentsOf, store: GraphStore
) -> None:
    restricted = ingest(
        ("email", "a@shop.de"),
        consents=(
            _consent("marketing", True, _minutes(2)),
            _consent("analytics", True, _minutes(1)),
            _consent(RESTRICTION_PURPOSE, False, _minutes(3), ConsentSignal.RESTRICTION),
            _consent("marketing", False, _minutes(1)),
        ),
    )
    plain = ingest(("email", "b@shop.de"), consents=(_consent("analytics"),))
    silent = ingest(("email", "c@shop.de"))
    rows = {
        r.person_id: r for r in _scan_all(store, MemberScan(consent_purposes=("marketing",)), 2)
    }
    assert _purposes_and_times(list(rows[restricted].consents)) == [
        ("marketing", _minutes(1), False),
        ("marketing", _minutes(2), True),
        (RESTRICTION_PURPOSE, _minutes(3), False),
    ]
    assert rows[plain].consents == ()
    assert rows[silent].consents == ()
    # The same records as person_consents returns.
    assert list(rows[restricted].consents) == consents_of(restricted, ["marketing"])
    # With event rules a page reads a list of persons, not an id range: the same answers (a
    # rule of at least 0 events holds for everyone).
    everyone = (EventCountRule("purchase", T0, 0),)
    ruled = MemberScan(event_rules=everyone, consent_purposes=("marketing",))
    assert {r.person_id: r for r in _scan_all(store, ruled, 2)} == rows
    analytics = MemberScan(event_rules=everyone, consent_purposes=("analytics",))
    by_person = {r.person_id: r.consents for r in _scan_all(store, analytics, 1)}
    assert [c.purpose for c in by_person[plain]] == ["analytics"]
    assert [c.purpose for c in by_person[restricted]] == ["analytics", RESTRICTION_PURPOSE]


def test_member_page_consent_filter_leaves_out_persons_whose_consent_cannot_allow(
    ingest: Ingest, store: GraphStore
) -> None:
    """``MemberScan.consent_filter``: persons whose current consent for the purpose cannot
    allow come back excluded with the reason, nothing loaded; the others as without it.
    The state follows merges (a grant arriving with a merged identifier counts)."""
    later = _minutes(10)
    granted = ingest(("email", "a@shop.de"), consents=(_consent("ads"),))
    denied = ingest(("email", "b@shop.de"), consents=(_consent("ads", False),))
    tie = ingest(
        ("email", "c@shop.de"),
        consents=(_consent("ads", True, later), _consent("ads", False, later)),
    )
    silent = ingest(("email", "d@shop.de"), consents=(_consent("other"),))
    objected = ingest(
        ("email", "e@shop.de"),
        consents=(_consent("ads", False, T0, ConsentSignal.OBJECTION),),
    )
    restricted = ingest(
        ("email", "f@shop.de"),
        consents=(_consent(RESTRICTION_PURPOSE, False, T0, ConsentSignal.RESTRICTION),),
    )
    # A denial, then a later grant on another identifier merged in: the grant decides.
    regranted = ingest(("email", "g@shop.de"), consents=(_consent("ads", False),))
    ingest(("cookie_id", "g"), consents=(_consent("ads", True, later),))
    assert ingest(("email", "g@shop.de"), ("cookie_id", "g")) == regranted
    scan = MemberScan(attribute_names=("city",), consent_purposes=("ads",), consent_filter="ads")
    assert _exclusions(store, scan) == {
        granted: None,
        denied: ConsentExclusion.DENIED,
        tie: ConsentExclusion.TIE_DENIED,
        silent: ConsentExclusion.NO_CONSENT,
        objected: None,
        restricted: None,
        regranted: None,
    }
    # Pages of several persons: the left-out ones only counted, by reason.
    pages = _pages(store, scan, 2)
    rows = {r.person_id: r for page in pages for r in page.rows}
    assert set(rows) == {granted, objected, restricted, regranted}
    assert sum((Counter(page.excluded) for page in pages), Counter()) == {
        ConsentExclusion.DENIED: 1,
        ConsentExclusion.TIE_DENIED: 1,
        ConsentExclusion.NO_CONSENT: 1,
    }
    unfiltered = {
        r.person_id: r for r in _scan_all(store, MemberScan(consent_purposes=("ads",)), 3)
    }
    # A person whose records reduce to a grant comes with it (the deciding record: for
    # regranted, the later grant on the merged-in node), the others with their records.
    for person in (granted, objected, restricted, regranted):
        grant = consent_grant(unfiltered[person].consents, "ads")
        assert rows[person].grant == grant
        assert rows[person].consents == (() if grant is not None else unfiltered[person].consents)
    assert {p for p in rows if rows[p].grant is not None} == {granted, regranted}
    regrant = rows[regranted].grant
    assert regrant is not None
    assert (regrant.at, regrant.signal) == (later, ConsentSignal.DIRECT)
    # Asked for records of another purpose too, the scan hands every kept person's records.
    wider = MemberScan(consent_purposes=("ads", "other"), consent_filter="ads")
    assert all(r.grant is None and r.consents for r in _scan_all(store, wider, 3))
    # With an event rule the same filter applies to the persons the rule selects.
    buyer = ingest(
        ("email", "h@shop.de"),
        consents=(_consent("ads", False),),
        facts=(_event("purchase", _minutes(5)),),
    )
    ruled = MemberScan(
        event_rules=(EventCountRule("purchase", T0, 1),),
        consent_purposes=("ads",),
        consent_filter="ads",
    )
    (page,) = _pages(store, ruled, 5)
    assert page == MemberScanPage((), 1, buyer, {ConsentExclusion.DENIED: 1})
